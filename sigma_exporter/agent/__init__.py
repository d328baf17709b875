"""On the Sigma host: the NVML reader and the cross-check against Sigma's figures."""
