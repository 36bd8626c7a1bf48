"""A Flower app (ServerApp + ClientApp) on bundled CIFAR-10 test images, audited by gradleak."""
