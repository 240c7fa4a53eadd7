"""Fine-tuning through Farebox: training files checked and priced on upload, jobs budgeted, trained tokens billed."""
