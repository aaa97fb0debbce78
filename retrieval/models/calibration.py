"""Calibration texts for static int8 quantisation: fixed, offline, the same on every machine.

Static quantisation learns each activation's range from a few hundred sample inputs, so
the quantised model is a function of those inputs. They must not depend on what a user
happens to ingest (the model would differ between collections) nor on anything fetched:
they are generated here from fixed sentence templates and word lists with a seeded
`random.Random`, whose `choice`/`randrange` sequence is stable across Python versions.
The mix covers what the engine embeds: news passages of 1-9 sentences (10-250 word
pieces), scientific abstract-like prose, and short queries.
"""

from __future__ import annotations

import hashlib
import random

SEED = 20240501
N_PASSAGES = 240
N_QUERIES = 60

_WHO = [
    "The government", "Ministers", "The central bank", "Shareholders", "The chief executive",
    "Analysts", "The company", "Union leaders", "The prime minister", "Campaigners",
    "The England coach", "The striker", "Researchers", "The film's director", "Fans",
    "The regulator", "Doctors", "Investors", "The opposition party", "A spokesman",
    "The European Commission", "Retailers", "The software firm", "Police", "The singer",
    "Scientists at the university", "Patients", "The airline", "Voters", "The champion",
]
_DID = [
    "announced", "criticised", "welcomed", "rejected", "warned about", "reported",
    "confirmed", "denied", "questioned", "praised", "delayed", "launched", "backed",
    "investigated", "predicted", "blamed", "cut", "raised", "signed", "defended",
]
_WHAT = [
    "a rise in interest rates", "the takeover bid", "plans for a new stadium",
    "quarterly profits", "the budget deficit", "a fall in consumer spending",
    "the latest mobile phone", "broadband prices", "the election campaign",
    "the proposed tax changes", "the merger", "the opening match", "a new album",
    "the award ceremony", "job losses at the factory", "the trial results",
    "the spread of the virus", "a shortage of nurses", "the peace talks", "oil prices",
    "the transfer fee", "online music sales", "the security flaw", "the asylum rules",
    "the final of the tournament", "rising house prices", "the box office record",
    "the pension reforms", "the video game console", "carbon emissions",
]
_WHEN = [
    "on Monday", "last week", "in the first quarter", "earlier this year", "by 2010",
    "after months of talks", "for the third year running", "in December", "on Friday night",
    "ahead of the summit", "despite the weather", "since the start of the season",
]
_NUM = ["2%", "15%", "$1.2bn", "£600m", "3.4 million", "120,000", "76%", "£45", "30", "eight"]
_SCI_SUBJECT = [
    "Expression of the protein", "Treatment with the inhibitor", "Knockout mice",
    "The randomized controlled trial", "Patients with type 2 diabetes", "The mutation",
    "Vitamin D supplementation", "T cell activation", "The cohort study", "Tumour growth",
    "Insulin resistance", "The meta-analysis", "Macrophage infiltration", "The vaccine",
    "Mitochondrial dysfunction", "Gene expression profiling",
]
_SCI_VERB = [
    "was associated with", "significantly reduced", "did not affect", "increased",
    "is required for", "was independent of", "correlated with", "prevented",
]
_SCI_OBJECT = [
    "mortality in elderly patients", "the risk of cardiovascular events",
    "cell proliferation in vitro", "the expression of inflammatory cytokines",
    "bone mineral density", "viral replication", "the rate of relapse",
    "apoptosis of cancer cells", "blood pressure", "neuronal survival",
    "the incidence of malaria", "DNA repair", "glucose tolerance", "antibiotic resistance",
]
_QUERY = [
    "what did {who} say about {what}", "{what} {when}", "why {who} {did} {what}",
    "effect of {sci_subject} on {sci_object}", "how much were {what}", "{who} {what}",
    "does {sci_subject} reduce {sci_object}", "latest news on {what}",
]
_SENTENCES = [
    "{who} {did} {what} {when}.",
    "{who} said {what} had {did_pp} by {num} {when}, the highest level in years.",
    '"We are very disappointed," {who_lower} said, adding that {what} would be reviewed.',
    "According to figures published {when}, {what} rose {num} compared with a year earlier.",
    "{who} {did} {what}, but {who_lower} said it was too early to judge the effect.",
    "The decision follows criticism of {what}, which {who_lower} {did} {when}.",
    "{sci_subject} {sci_verb} {sci_object} (p < 0.05, n = {n}).",
    "In a sample of {n} participants, {sci_subject_lower} {sci_verb} {sci_object}.",
    "These findings suggest that {sci_subject_lower} {sci_verb} {sci_object}.",
    "{who} expects {what} to continue, with a further {num} increase forecast {when}.",
]


def calibration_texts() -> list[str]:
    """N_PASSAGES passages and N_QUERIES queries, identical on every call and machine."""
    rng = random.Random(SEED)
    texts = []
    for _ in range(N_PASSAGES):
        sentences = [_fill(rng.choice(_SENTENCES), rng) for _ in range(1 + rng.randrange(9))]
        texts.append(" ".join(sentences))
    for _ in range(N_QUERIES):
        texts.append(_fill(rng.choice(_QUERY), rng))
    return texts


def calibration_digest() -> str:
    """A short digest of the calibration texts: part of a quantised model's identity."""
    digest = hashlib.sha256("\n".join(calibration_texts()).encode())
    return digest.hexdigest()[:12]


def _fill(template: str, rng: random.Random) -> str:
    who, sci_subject = rng.choice(_WHO), rng.choice(_SCI_SUBJECT)
    did = rng.choice(_DID)
    return template.format(
        who=who, who_lower=who[0].lower() + who[1:], did=did, did_pp=did.split()[0],
        what=rng.choice(_WHAT), when=rng.choice(_WHEN), num=rng.choice(_NUM),
        n=10 * (3 + rng.randrange(500)), sci_subject=sci_subject,
        sci_subject_lower=sci_subject[0].lower() + sci_subject[1:],
        sci_verb=rng.choice(_SCI_VERB), sci_object=rng.choice(_SCI_OBJECT),
    )
