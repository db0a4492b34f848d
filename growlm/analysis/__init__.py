"""Analysis of growth runs: the paper's growth-timing guideline (plan), equal-loss speedups
(compare), loss-curve and guideline fits (fit), sweeps of growth timing and factor (sweep)."""
