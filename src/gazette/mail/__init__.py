"""Mail: MIME bytes, DKIM, sender addresses and the transports that hand messages over."""
