"""Datasets and data generation for openblip (annotation loaders, the synthetic vision-language world)."""
