"""DVC experiments run beside the workspace: override runs and the ablation grids."""
