"""The casting-inspection library: everything the stages and commands share. No entry points, no knowledge of DVC's command line."""
