"""shopctl: the order platform's command line for local use and tests (`shopctl --help`)."""
