"""Study activation functions with PyTorch Lightning: an MLP on make_circles, monitored layer by layer."""
