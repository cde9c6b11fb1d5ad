"""Training-side code: dataset preparation, training loops and export. The runtime never imports this."""
