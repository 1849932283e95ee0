"""The benchmark stage: inference speed per batch size and device, and the machine it ran on."""
