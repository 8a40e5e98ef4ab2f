"""Personal data in transcripts: detectors, redaction, and the mode each app and template asks for."""
