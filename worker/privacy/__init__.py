"""Personal data in transcripts: detectors and redaction by the mode each app and template asks
for, transcript retention, and a user's erasure on request."""
