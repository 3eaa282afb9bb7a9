"""Image classification: (AA-)Wide-ResNet / ResNet on CIFAR-10/100 and a procedural synthetic set."""
