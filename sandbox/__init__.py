"""The sandbox payment provider (`python -m sandbox`): WeChat Pay, Alipay and a card acquirer at once.

It speaks services/payment/protocol.py as a real provider would: it checks request signatures, honours
idempotency keys, refuses card numbers, keeps a ledger of what it performed, serves a pay page for
the wallets and sends signed callbacks (retried with backoff) to the notify_url it was given.

Card tokens decide a card's answer:

    tok_approve             authorized
    tok_decline             declined CARD_DECLINED
    tok_insufficient_funds  declined INSUFFICIENT_FUNDS
    tok_timeout             never answers (the request is held SANDBOX_TIMEOUT_HOLD_S, then 504)
    tok_delay               authorized SANDBOX_DELAY_S after the first request for the payment id;
                            every request for it answers as soon as that is done
    tok_flaky               503 on the first two requests for a payment id, then authorized
    anything else           declined INVALID_TOKEN

Its state lives in memory: a sandbox forgets every payment, ledger entry and callback on restart.
Dev and test only: it refuses to start with ENVIRONMENT=prod.
"""
