"""podmigrate's control service and CLI: move running pods between nodes with their state."""
