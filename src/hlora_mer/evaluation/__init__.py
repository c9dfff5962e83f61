"""Pooled MER metrics (``metrics``: ACC, UF1, UAR, WAR, bootstrap) and run reports (``report``)."""
