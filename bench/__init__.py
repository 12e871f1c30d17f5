"""gradserve benchmarks: ours against hand-written numpy and PyTorch (when installed), in one run."""
