"""Human-readable reports (markdown) rendered from the machine-readable dicts."""
