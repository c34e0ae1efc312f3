"""The evaluation suite: generate every held-out clip, score it (`suite`), write the report (`report`)."""
