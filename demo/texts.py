"""Prompt texts for the demo traffic: questions customers repeat (exactly and
nearly), long tickets, fraud cases, search queries, and a long system prompt.
Some carry personal data on purpose: the proxy redacts it before storing."""

from __future__ import annotations

import random

FAQ = (
    "How do I reset my password?",
    "Why was my card declined?",
    "How long does a refund take?",
    "Can I change the currency of my account?",
    "How do I add a second user to my account?",
    "What are your fees for international transfers?",
    "How do I download last month's invoice?",
    "Is there a limit on daily payouts?",
    "How do I close my account?",
    "Why is my payout still pending?",
)
TOPICS = (
    "payouts",
    "invoices",
    "API keys",
    "webhooks",
    "disputes",
    "chargebacks",
    "refunds",
    "two-factor login",
    "tax forms",
    "currency conversion",
    "card readers",
    "subscriptions",
)
PERSONAL = (
    "My email is jane.doe@example.com, please write back there.",
    "You can call me on +1 415 555 0133.",
    "The card was 4111 1111 1111 1111 and it was charged twice.",
    "My IBAN is DE89 3704 0044 0532 0130 00.",
)
WORDS = (
    "customer reports that the payment page froze after entering the code and the charge "
    "appeared twice on the statement while the dashboard shows a single pending transfer "
    "the merchant asks for a refund of the duplicate and a confirmation e-mail the agent "
    "checked the logs and found a retry from the mobile app after a timeout"
).split()


def near_duplicate(text: str, rng: random.Random) -> str:
    """The same question asked slightly differently: case, punctuation, filler words."""
    variants = (
        lambda t: t.lower(),
        lambda t: t.rstrip("?") + "??",
        lambda t: "Hi, " + t[0].lower() + t[1:],
        lambda t: t.replace("?", " please?"),
        lambda t: "  " + t + " Thanks!",
    )
    return rng.choice(variants)(text)


def faq_question(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.45:
        return rng.choice(FAQ)  # asked word for word, again and again
    if roll < 0.65:
        return near_duplicate(rng.choice(FAQ), rng)
    question = (
        f"I have a question about {rng.choice(TOPICS)} for order "
        f"#{rng.randint(1000, 99999)}: {rng.choice(FAQ)}"
    )
    if rng.random() < 0.2:
        question += " " + rng.choice(PERSONAL)
    return question


def ticket_text(rng: random.Random) -> str:
    """A long ticket thread: 1,100 to 2,000 tokens (4 characters per token)."""
    target = rng.randint(4400, 8000)
    words: list[str] = [f"Ticket #{rng.randint(100000, 999999)}:"]
    size = len(words[0])
    while size < target:
        word = rng.choice(WORDS)
        words.append(word)
        size += len(word) + 1
    if rng.random() < 0.3:
        words.append(rng.choice(PERSONAL))
    return " ".join(words)


def fraud_case(rng: random.Random) -> str:
    merchant = rng.choice(
        (
            "Acme Store",
            "Globex Travel",
            "Initech Cloud",
            "Umbrella Pharmacy",
            "Hooli Games",
            "Stark Electronics",
        )
    )
    amount = rng.choice((9.99, 19.99, 49.0, 120.0, 999.0, 2400.0))
    if rng.random() < 0.5:  # the same few cases come back: a cacheable classification
        return (
            f"Card-not-present charge of ${amount:.2f} at {merchant}, new device, first purchase."
        )
    return (
        f"Charge of ${amount + rng.randint(1, 500):.2f} at {merchant} from "
        f"{rng.choice(('Lisbon', 'Austin', 'Osaka', 'Nairobi'))}, customer since "
        f"{rng.randint(2012, 2025)}, {rng.randint(0, 6)} disputes before."
    )


def search_query(rng: random.Random) -> str:
    query = rng.choice(
        (
            "refund policy",
            "api rate limits",
            "webhook retries",
            "payout schedule",
            "dispute evidence",
            "invoice pdf",
            "tax id format",
            "sandbox keys",
        )
    )
    if rng.random() < 0.6:
        return f"Query: {query}. Candidates: doc-1, doc-2, doc-3, doc-4, doc-5."
    docs = ", ".join(f"doc-{rng.randint(1, 400)}" for _ in range(rng.randint(5, 30)))
    return f"Query: {query} {rng.choice(TOPICS)}. Candidates: {docs}."


LONG_BRIEF = (
    "You write marketing e-mails for Acme Pay. Brand voice: warm, concrete, no hype. "
    + " ".join(
        f"Rule {n}: keep sentences short, name one benefit per paragraph, never promise "
        "returns, always include the unsubscribe footer and the company address, and avoid "
        "words that spam filters flag."
        for n in range(1, 46)
    )
)
