"""Text sources: calibration documents, evaluation text, window sampling."""
