"""Driver errors.

DriverError            a workload could not be started, found or stopped (message says why)
 └── StartError        the command or image could not be started (not found, not executable)
"""


class DriverError(Exception):
    pass


class StartError(DriverError):
    pass
