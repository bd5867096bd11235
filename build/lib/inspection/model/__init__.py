"""The network: architectures, augmentation, the training input pipeline and loop, the OOD gate, Grad-CAM."""
