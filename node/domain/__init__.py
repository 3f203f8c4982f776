"""The approval domain: date-times, the working-day calendar, deadlines (no database or gRPC code here)."""
