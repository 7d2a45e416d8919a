"""Provider webhooks (issue 18): SES through SNS, Postmark, Mailgun, over real HTTP."""
