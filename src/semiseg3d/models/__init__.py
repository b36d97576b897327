"""Networks: Subnet A (3D ResNet34 encoder-decoder), Subnet B (V-Net), the dual model."""
