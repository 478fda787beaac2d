"""Command-line interface (`fxai-tune`)."""
