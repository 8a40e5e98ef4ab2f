"""Where a vendor is called: ZEGO and Coze clients, their errors, the rate limiter and retries."""
