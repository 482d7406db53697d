"""Infrastructure every layer may use: where files live (paths), the device, atomic file writes."""
