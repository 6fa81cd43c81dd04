"""HSTU (Hierarchical Sequential Transduction Units, Zhai et al., ICML 2024)."""
