"""The networks: VQGAN building blocks, quantizer, autoencoder, transformer, fusion, CodeFormer, discriminator."""
