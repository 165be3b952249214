"""Benchmarks: psn_zoo against SpikingJelly 2.0.0 and the physical floor, measured side by side."""
