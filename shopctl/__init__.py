"""shopctl: the order platform's command line for local use, tests and analysts (`shopctl --help`)."""
