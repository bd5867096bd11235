"""The exported model in use: SavedModel and TF.js export, model references, batch prediction, the browser bundle."""
