"""Deterministic, streaming demo data for Nudge: an e-commerce app over the last ``days`` days.

``generate()`` yields chunks (lists) of plain dicts in Nudge's native upload format (the
CleverTap upload shape), ready to be posted as ``{"d": chunk}`` to ``/1/upload`` or handed
to the ingest layer directly::

    {"type": "profile", "identity": "u12", "ts": 1718000000, "email": "ana.silva12@example.com",
     "profileData": {"Name": ..., "City": ..., "Country": ..., "Gender": "F", "Age": 31,
                     "Signup Date": "$D_1717990000", "Timezone": "America/Sao_Paulo",
                     "Platform": "Android", "App Version": "5.4.1", "MSG-email": True,
                     "MSG-push": True, "MSG-sms": False, "Customer Type": "Regular"}}
    {"type": "profile", "objectId": "anon-1f2e...", "ts": ..., "profileData": {...}}  # anon device
    {"type": "token", "identity": "u12", "ts": ..., "tokenData": {"id": "...", "type": "fcm"}}
    {"type": "event", "identity": "u12", "ts": ..., "evtName": "Charged",
     "evtData": {...}, "msgId": "demo-5be0c1a2-123"}

How the data is made
--------------------
Users are drawn up front as numpy columns (O(users) memory, ~250 bytes per user):
segment (loyal / regular / one-time buyer / browser / churner), city (30 cities in 12
countries, each with its IANA timezone), platform, consent flags, a heavy-tailed (Pareto)
activity weight, a signup time (40% before the window, the rest spread over it so that
cohorts exist) and derived times: churn, uninstall, the one purchase of one-time buyers and,
for anonymous-first users, the first anonymous visit before they log in.

Time is then walked one 24 h slot at a time, vectorised over all users: sessions per user are
Poisson with a rate = weight x retention(age since signup, decaying over weeks) x sale boost,
and are thinned by a day-of-week x hour-of-day table evaluated in each user's *local* time
(evening peak, night trough, weekends busier with a later start). Each session is expanded
into a launch, product views, searches, add-to-carts, checkout, charge and the occasional
rating, with leaky funnels; push/email campaigns add Notification Viewed/Clicked (clicks open
a session). A feedback controller on the session rate keeps the total event count close to
``events``. Each slot's records are sorted by ``ts`` and turned into dicts lazily, chunk by
chunk, so memory is bounded by one day of columnar events (~100 bytes per event) plus one
chunk of dicts: about 0.5 GB peak for 1M users / 100M events, whatever the run's length.

Stream order guarantees: profiles of users who signed up before the window come first (ts =
window start); every other profile comes at its signup time, before any event of that user
(ties broken profile < token < event); anonymous-first users get an objectId-only profile
before their first anonymous event and a profile carrying both ``objectId`` and ``identity``
(the identity merge) before their first identified event. Events are in ascending ``ts``
order throughout (events that spill past a slot's end are carried into the next slot).

Everything is a pure function of (users, events, seed, now, days); ``chunk_size`` only changes
how records are grouped. (Local times use the tz database when the machine has one, with
daylight saving; without tzdata, fixed standard offsets.) Emails use example.com/.net/.org
only and push tokens are fake, so nothing can reach a real person.
"""

from __future__ import annotations

import gc
import hashlib
import math
import time
import unicodedata
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import repeat
from operator import itemgetter

import numpy as np

__all__ = ["generate", "estimate_chunks", "CITIES", "EVENT_NAMES"]

DAY = 86_400

# ---------------------------------------------------------------------------------------------
# Static world: countries, cities, names, catalogue
# ---------------------------------------------------------------------------------------------

# country name, name pool, iOS share among app users, payment profile
COUNTRIES: tuple[tuple[str, str, float, str], ...] = (
    ("United States", "en", 0.55, "default"),
    ("United Kingdom", "en", 0.50, "default"),
    ("Germany", "de", 0.35, "de"),
    ("France", "fr", 0.35, "default"),
    ("Spain", "es", 0.25, "default"),
    ("Mexico", "es", 0.20, "cod"),
    ("Brazil", "pt", 0.15, "br"),
    ("India", "in", 0.05, "in"),
    ("Japan", "jp", 0.65, "jp"),
    ("Australia", "en", 0.55, "default"),
    ("United Arab Emirates", "ar", 0.45, "cod"),
    ("Indonesia", "id", 0.10, "cod"),
)
_COUNTRY_IDX = {c[0]: i for i, c in enumerate(COUNTRIES)}

# city, country, IANA timezone, static UTC offset in hours (fallback without tzdata), weight
CITIES: tuple[tuple[str, str, str, float, float], ...] = (
    ("New York", "United States", "America/New_York", -5, 6.0),
    ("Los Angeles", "United States", "America/Los_Angeles", -8, 4.0),
    ("Chicago", "United States", "America/Chicago", -6, 3.0),
    ("Houston", "United States", "America/Chicago", -6, 2.0),
    ("San Francisco", "United States", "America/Los_Angeles", -8, 2.0),
    ("Seattle", "United States", "America/Los_Angeles", -8, 1.5),
    ("Miami", "United States", "America/New_York", -5, 1.5),
    ("London", "United Kingdom", "Europe/London", 0, 5.0),
    ("Manchester", "United Kingdom", "Europe/London", 0, 1.5),
    ("Birmingham", "United Kingdom", "Europe/London", 0, 1.2),
    ("Berlin", "Germany", "Europe/Berlin", 1, 3.0),
    ("Munich", "Germany", "Europe/Berlin", 1, 2.0),
    ("Hamburg", "Germany", "Europe/Berlin", 1, 1.5),
    ("Paris", "France", "Europe/Paris", 1, 3.5),
    ("Lyon", "France", "Europe/Paris", 1, 1.2),
    ("Madrid", "Spain", "Europe/Madrid", 1, 2.5),
    ("Barcelona", "Spain", "Europe/Madrid", 1, 2.0),
    ("Mexico City", "Mexico", "America/Mexico_City", -6, 3.5),
    ("Guadalajara", "Mexico", "America/Mexico_City", -6, 1.2),
    ("São Paulo", "Brazil", "America/Sao_Paulo", -3, 4.5),
    ("Rio de Janeiro", "Brazil", "America/Sao_Paulo", -3, 2.5),
    ("Mumbai", "India", "Asia/Kolkata", 5.5, 5.0),
    ("Bengaluru", "India", "Asia/Kolkata", 5.5, 4.5),
    ("Delhi", "India", "Asia/Kolkata", 5.5, 4.5),
    ("Tokyo", "Japan", "Asia/Tokyo", 9, 4.0),
    ("Osaka", "Japan", "Asia/Tokyo", 9, 1.5),
    ("Sydney", "Australia", "Australia/Sydney", 10, 2.5),
    ("Melbourne", "Australia", "Australia/Melbourne", 10, 2.0),
    ("Dubai", "United Arab Emirates", "Asia/Dubai", 4, 2.5),
    ("Jakarta", "Indonesia", "Asia/Jakarta", 7, 4.0),
)

# (male first names, female first names, last names) per language pool
NAME_POOLS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "en": (
        ("James", "Michael", "David", "Daniel", "Matthew", "Ryan", "Ethan", "Noah", "Oliver",
         "Jack", "Liam", "Lucas", "Benjamin", "Samuel", "Thomas", "William"),
        ("Emma", "Olivia", "Sophia", "Emily", "Charlotte", "Amelia", "Grace", "Chloe", "Hannah",
         "Jessica", "Sarah", "Lily", "Ava", "Mia", "Ella", "Isabella"),
        ("Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson", "Taylor",
         "Anderson", "Thomas", "Moore", "Clark", "Lewis", "Walker", "Hall", "Young", "King",
         "Wright", "Scott", "Green", "Baker", "Evans", "Turner"),
    ),
    "de": (
        ("Lukas", "Leon", "Felix", "Jonas", "Maximilian", "Paul", "Finn", "Elias", "Tim", "Jan",
         "Moritz", "Niklas"),
        ("Mia", "Hannah", "Lena", "Lea", "Anna", "Laura", "Sophie", "Marie", "Julia", "Johanna",
         "Clara", "Emilia"),
        ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker",
         "Schulz", "Hoffmann", "Koch", "Richter", "Klein", "Wolf", "Neumann", "Schwarz"),
    ),
    "fr": (
        ("Louis", "Gabriel", "Léo", "Hugo", "Arthur", "Jules", "Lucas", "Nathan", "Théo",
         "Raphaël", "Antoine", "Maxime"),
        ("Emma", "Jade", "Louise", "Alice", "Chloé", "Léa", "Manon", "Camille", "Inès",
         "Juliette", "Zoé", "Sarah"),
        ("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy",
         "Moreau", "Simon", "Laurent", "Lefebvre", "Michel", "Garcia", "Fournier"),
    ),
    "es": (
        ("Hugo", "Mateo", "Martín", "Lucas", "Leo", "Daniel", "Alejandro", "Pablo", "Manuel",
         "Javier", "Diego", "Santiago", "Carlos", "José"),
        ("Lucía", "Sofía", "Martina", "María", "Paula", "Julia", "Valeria", "Daniela", "Carmen",
         "Elena", "Camila", "Ximena"),
        ("García", "Rodríguez", "González", "Fernández", "López", "Martínez", "Sánchez", "Pérez",
         "Gómez", "Martín", "Hernández", "Díaz", "Torres", "Ramírez", "Flores", "Morales"),
    ),
    "pt": (
        ("Miguel", "Arthur", "Heitor", "Davi", "Gabriel", "Pedro", "Lucas", "Matheus", "Rafael",
         "Gustavo", "Felipe", "João"),
        ("Helena", "Alice", "Laura", "Maria", "Valentina", "Beatriz", "Ana", "Júlia", "Larissa",
         "Camila", "Fernanda", "Gabriela"),
        ("Silva", "Santos", "Oliveira", "Souza", "Rodrigues", "Ferreira", "Alves", "Pereira",
         "Lima", "Gomes", "Costa", "Ribeiro", "Martins", "Carvalho", "Araújo", "Barbosa"),
    ),
    "in": (
        ("Aarav", "Vihaan", "Arjun", "Rohan", "Aditya", "Rahul", "Vikram", "Karan", "Ishaan",
         "Siddharth", "Amit", "Nikhil"),
        ("Ananya", "Diya", "Priya", "Aisha", "Saanvi", "Isha", "Kavya", "Pooja", "Neha", "Riya",
         "Meera", "Shreya"),
        ("Sharma", "Verma", "Gupta", "Patel", "Singh", "Kumar", "Reddy", "Iyer", "Nair", "Mehta",
         "Joshi", "Rao", "Das", "Chopra", "Kapoor", "Bose"),
    ),
    "jp": (
        ("Haruto", "Yuto", "Sota", "Ren", "Takumi", "Kenta", "Hiroshi", "Daiki", "Kaito", "Riku"),
        ("Yui", "Hina", "Aoi", "Sakura", "Yuna", "Mei", "Rin", "Saki", "Yuka", "Emi"),
        ("Sato", "Suzuki", "Takahashi", "Tanaka", "Watanabe", "Ito", "Yamamoto", "Nakamura",
         "Kobayashi", "Kato", "Yoshida", "Yamada"),
    ),
    "ar": (
        ("Mohammed", "Ahmed", "Omar", "Ali", "Yousef", "Khalid", "Hamdan", "Saeed", "Rashid",
         "Zayed", "Hassan", "Faisal"),
        ("Fatima", "Mariam", "Aisha", "Noura", "Layla", "Huda", "Sara", "Reem", "Salma", "Hessa",
         "Amna", "Maitha"),
        ("Al Mansoori", "Al Hashimi", "Al Qasimi", "Al Suwaidi", "Al Ali", "Al Falasi", "Khan",
         "Haddad", "Nasser", "Saleh", "Rahman", "Al Marzouqi"),
    ),
    "id": (
        ("Budi", "Agus", "Andi", "Rizky", "Dimas", "Fajar", "Adi", "Bayu", "Hendra", "Yoga"),
        ("Siti", "Dewi", "Putri", "Ayu", "Rina", "Nur", "Intan", "Sari", "Fitri", "Wulan"),
        ("Santoso", "Wijaya", "Saputra", "Hidayat", "Kusuma", "Pratama", "Setiawan", "Nugroho",
         "Halim", "Gunawan", "Susanto", "Lestari"),
    ),
}
NEUTRAL_NAMES = ("Alex", "Sam", "Jordan", "Robin", "Charlie", "Taylor", "Kim", "Andrea", "Noor",
                 "Yuki")
EMAIL_DOMAINS = ("example.com", "example.net", "example.org")  # reserved: never deliverable

# name, SKU prefix, median price, log-sigma, popularity, brands, search queries
CATEGORIES: tuple[tuple[str, str, float, float, float, tuple[str, ...], tuple[str, ...]], ...] = (
    ("Electronics", "EL", 89.0, 0.9, 0.16,
     ("Aurion", "Voltix", "Pixelon", "Kestrel Audio", "Nimbus", "Orbitek"),
     ("wireless earbuds", "usb c charger", "laptop", "4k tv", "smartwatch", "phone case",
      "gaming mouse", "bluetooth speaker")),
    ("Fashion", "FA", 39.0, 0.6, 0.22,
     ("Maison Lune", "Urban Thread", "Northwind", "Vela", "Cobalt & Co", "Sierra"),
     ("sneakers", "summer dress", "jeans", "leather jacket", "running shoes", "t-shirt",
      "sunglasses", "handbag")),
    ("Books", "BO", 14.0, 0.35, 0.08,
     ("Penwright Press", "Harbor Books", "Lantern House", "Bluequill"),
     ("cookbook", "thriller", "kids books", "self help", "fantasy series", "biography")),
    ("Home", "HO", 45.0, 0.75, 0.13,
     ("Casa Verde", "Hearthly", "Nordhaus", "Loft & Linen", "Brightway"),
     ("air fryer", "bedsheets", "desk lamp", "coffee maker", "storage box", "curtains",
      "vacuum cleaner")),
    ("Beauty", "BE", 19.0, 0.5, 0.12,
     ("Lumière", "Glow Lab", "Botanica", "Velvet Rose", "Pure Skin"),
     ("sunscreen", "moisturizer", "lipstick", "shampoo", "perfume", "face serum")),
    ("Sports", "SP", 35.0, 0.7, 0.09,
     ("Stride", "Peakform", "Apex Athletics", "Trailborn", "Aqualine"),
     ("yoga mat", "dumbbells", "cycling helmet", "football", "tennis racket", "protein shaker")),
    ("Grocery", "GR", 7.0, 0.5, 0.12,
     ("Daily Harvest", "Green Basket", "Fresh Farm", "Golden Grain", "Orchard Lane"),
     ("coffee beans", "olive oil", "oat milk", "pasta", "snacks", "green tea")),
    ("Toys", "TO", 25.0, 0.6, 0.08,
     ("Brickbuddy", "Tiny Titans", "Wonderkit", "Playnest", "Puzzle Peak"),
     ("building blocks", "puzzle", "board game", "rc car", "plush toy", "doll house")),
)
N_PROD = 150  # products per category
GROCERY = 6

PLATFORMS = ("Android", "iOS", "Web")
APP_VERSIONS = ("5.4.2", "5.4.1", "5.3.0", "5.2.1", "5.1.3")
VERSION_P = ((0.35, 0.25, 0.20, 0.12, 0.08), (0.45, 0.25, 0.15, 0.10, 0.05))  # Android, iOS
BROWSERS = ("Chrome", "Safari", "Edge", "Firefox")
BROWSER_P = (0.64, 0.21, 0.08, 0.07)
UTM_SOURCES = ("google", "direct", "facebook", "instagram", "email", "tiktok")
UTM_P = (0.34, 0.30, 0.10, 0.10, 0.10, 0.06)
PAYMENT_METHODS = ("Credit Card", "Debit Card", "PayPal", "Apple Pay", "Google Pay", "UPI", "Pix",
                   "Cash on Delivery")
PAYMENT_P = {
    "default": (0.40, 0.20, 0.15, 0.10, 0.10, 0.0, 0.0, 0.05),
    "de": (0.20, 0.25, 0.35, 0.10, 0.05, 0.0, 0.0, 0.05),
    "in": (0.12, 0.12, 0.0, 0.02, 0.14, 0.45, 0.0, 0.15),
    "br": (0.40, 0.12, 0.05, 0.03, 0.03, 0.0, 0.32, 0.05),
    "jp": (0.55, 0.08, 0.07, 0.12, 0.05, 0.0, 0.0, 0.13),
    "cod": (0.30, 0.20, 0.05, 0.07, 0.08, 0.0, 0.0, 0.30),
}
COUPONS = ("WELCOME10", "SAVE15", "FREESHIP", "BIGSALE25")
_DISCOUNT = np.array([0.10, 0.15, 0.0, 0.25, 0.0])  # index -1 -> no coupon -> 0
CUSTOMER_TYPES = ("VIP", "Regular", "New", "Prospect")

EVENT_NAMES = (
    "App Launched", "Session Started", "Product Viewed", "Searched", "Added To Cart",
    "Checkout Started", "Charged", "Rated", "Notification Viewed", "Notification Clicked",
    "App Uninstalled",
)

# ---------------------------------------------------------------------------------------------
# Behaviour model
# ---------------------------------------------------------------------------------------------

# segments: loyal, regular, one-time buyer, browser (never buys), churner
SEG_P = np.array([0.07, 0.30, 0.15, 0.28, 0.20])
SEG_BASE = np.array([1.0, 0.45, 0.22, 0.30, 0.45])      # relative sessions per active day
SEG_FLOOR = np.array([0.80, 0.35, 0.10, 0.15, 0.50])    # long-run retention level
SEG_TAU = np.array([40.0, 14.0, 7.0, 10.0, 12.0])       # retention decay, days
SEG_VIEWS = np.array([5.0, 4.0, 3.5, 4.5, 3.5])         # mean product views per session (>0)
SEG_SEARCH = np.array([0.6, 0.5, 0.4, 0.7, 0.4])        # mean searches per session
SEG_PCART = np.array([0.32, 0.26, 0.22, 0.12, 0.22])    # view -> add to cart
SEG_PCK = np.array([0.62, 0.50, 0.42, 0.25, 0.45])      # session with cart -> checkout
SEG_PCH = np.array([0.74, 0.62, 0.0, 0.0, 0.55])        # checkout -> charged
SEG_QTY = np.array([0.5, 0.25, 0.15, 0.15, 0.2])        # extra quantity (Poisson mean)
SEG_ENG = np.array([1.3, 1.0, 0.8, 0.85, 0.7])          # campaign engagement multiplier
SEG_CTYPE_P = np.array([  # Customer Type distribution per segment (VIP, Regular, New, Prospect)
    [0.70, 0.30, 0.0, 0.0],
    [0.05, 0.85, 0.10, 0.0],
    [0.0, 0.40, 0.60, 0.0],
    [0.0, 0.0, 0.20, 0.80],
    [0.0, 0.60, 0.40, 0.0],
])
SEG_CAT_BOOST = np.array([  # preferred-category tilt per segment
    [2.0, 1.0, 0.8, 1.5, 1.0, 1.0, 0.7, 0.8],
    [1.0] * 8,
    [0.8, 1.2, 1.0, 1.0, 1.2, 1.0, 1.0, 1.0],
    [1.3, 1.3, 0.8, 1.0, 1.0, 1.0, 0.6, 1.0],
    [1.0] * 8,
])
ZERO_VIEW = 0.12           # sessions that open the app and leave
PREF_P = 0.5               # share of views in the user's favourite category
RATE_AFTER = 0.12          # P(Rated | Charged)
RATE_RANDOM = 0.006        # P(Rated) in any session
STARS_P = (0.04, 0.05, 0.11, 0.30, 0.50)
PRE_SHARE = 0.40           # users who signed up before the window
ANON_SHARE = 0.20          # of in-window signups: anonymous first, then log in
NOTIF_SHARE = 0.06         # target share of notification events in the total
SALE_BOOST = 1.6
# gaps before an event inside a session: minimum + exponential mean (seconds), by event code
_GAP_MIN = np.array([0, 0, 0, 0, 6, 4, 3, 15, 20, 10, 0, 0, 0, 0], dtype=float)
_GAP_MEAN = np.array([0, 0, 0, 0, 40, 20, 12, 60, 80, 30, 0, 0, 0, 0], dtype=float)

# local-time rhythm: hour-of-day weights (weekday, weekend) and day-of-week factor (Mon..Sun)
_HOURLY = np.array([
    [0.25, 0.12, 0.07, 0.05, 0.05, 0.10, 0.30, 0.60, 0.85, 0.90, 0.90, 0.95,
     1.10, 1.00, 0.90, 0.90, 0.95, 1.05, 1.30, 1.60, 1.80, 1.70, 1.30, 0.70],
    [0.40, 0.25, 0.12, 0.07, 0.05, 0.06, 0.12, 0.25, 0.50, 0.80, 1.05, 1.20,
     1.30, 1.30, 1.25, 1.20, 1.20, 1.25, 1.35, 1.50, 1.60, 1.50, 1.20, 0.80],
])
_DOW = np.array([0.96, 0.93, 0.95, 0.98, 1.03, 1.14, 1.20])
_ACC = _HOURLY[(np.arange(7) >= 5).astype(int)] * _DOW[:, None]
_ACC = _ACC / _ACC.max()          # thinning acceptance by [local dow, local hour]
_CAND = 1.0 / float(_ACC.mean())  # candidate over-sampling so accepted rate averages 1

# record kinds (sort priority: anon profile < profile < token < events)
K_ANON, K_PROFILE, K_TOKEN = 0, 1, 2
C_LAUNCH, C_SESSION, C_VIEW, C_SEARCH, C_CART, C_CHECKOUT, C_CHARGED, C_RATED = range(3, 11)
C_NVIEW, C_NCLICK, C_UNINSTALL = 11, 12, 13

def _cdf(p) -> np.ndarray:
    c = np.cumsum(np.asarray(p, dtype=float))
    c /= c[-1]
    c[-1] = 1.0
    return c


def _draw(rng: np.random.Generator, cdf: np.ndarray, n: int) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(cdf) - 1)


def _ascii(s: str) -> str:
    s = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode()
    return s.replace(" ", "").replace("'", "").lower()


# name pools indexed by country
_POOL_KEYS = tuple(NAME_POOLS)
_COUNTRY_POOL = np.array([_POOL_KEYS.index(c[1]) for c in COUNTRIES])


def _name_table() -> tuple[list[str], list[str], np.ndarray, np.ndarray, list[str], list[str],
                           np.ndarray, np.ndarray]:
    """Flat first/last name lists (plus ASCII forms for emails) with offsets per pool/gender."""
    first: list[str] = []
    last: list[str] = []
    f_off = np.zeros((len(_POOL_KEYS), 3), np.int64)
    f_len = np.zeros((len(_POOL_KEYS), 3), np.int64)
    l_off = np.zeros(len(_POOL_KEYS), np.int64)
    l_len = np.zeros(len(_POOL_KEYS), np.int64)
    for p, key in enumerate(_POOL_KEYS):
        male, female, lasts = NAME_POOLS[key]
        for g, names in enumerate((male, female, NEUTRAL_NAMES)):
            f_off[p, g], f_len[p, g] = len(first), len(names)
            first.extend(names)
        l_off[p], l_len[p] = len(last), len(lasts)
        last.extend(lasts)
    return (first, [_ascii(n) for n in first], f_off, f_len,
            last, [_ascii(n) for n in last], l_off, l_len)


(_FIRST, _FIRST_A, _FIRST_OFF, _FIRST_LEN,
 _LAST, _LAST_A, _LAST_OFF, _LAST_LEN) = _name_table()

_CITY_NAMES = [c[0] for c in CITIES]
_COUNTRY_NAMES = [c[0] for c in COUNTRIES]
_CITY_COUNTRY = np.array([_COUNTRY_IDX[c[1]] for c in CITIES])
_TZ_NAMES = tuple(dict.fromkeys(c[2] for c in CITIES))
_CITY_TZ = np.array([_TZ_NAMES.index(c[2]) for c in CITIES])
_TZ_STATIC = np.array([next(c[3] for c in CITIES if c[2] == t) for t in _TZ_NAMES]) * 3600
_CITY_CDF = _cdf([c[4] for c in CITIES])
_IOS_SHARE = np.array([c[2] for c in COUNTRIES])
_PAY_CDF = np.array([_cdf(PAYMENT_P[c[3]]) for c in COUNTRIES])
_CAT_P = np.array([c[4] for c in CATEGORIES])
_CAT_CDF = _cdf(_CAT_P)
_SEG_CAT_CDF = np.array([_cdf(_CAT_P * b) for b in SEG_CAT_BOOST])
_QUERIES = tuple(q for c in CATEGORIES for q in c[6])
_QLEN = np.array([len(c[6]) for c in CATEGORIES])
_QOFF = np.concatenate([[0], np.cumsum(_QLEN)[:-1]])
_ZIPF_CDF = _cdf(1.0 / np.arange(1, N_PROD + 1) ** 1.05)


def _catalog() -> tuple[list[str], list[str], list[float], list[str], np.ndarray, np.ndarray]:
    """A fixed product catalogue (same for every seed): ids, categories, prices, brands."""
    rng = np.random.default_rng(20_240_601)
    pid: list[str] = []
    pcat: list[str] = []
    pbrand: list[str] = []
    prices = np.empty(len(CATEGORIES) * N_PROD)
    perm = np.empty((len(CATEGORIES), N_PROD), dtype=np.int64)
    for ci, (name, code, median, sigma, _pop, brands, _q) in enumerate(CATEGORIES):
        x = np.exp(np.log(median) + sigma * rng.standard_normal(N_PROD))
        x = np.clip(x, 1.5, 2999.0)
        prices[ci * N_PROD:(ci + 1) * N_PROD] = np.round(np.floor(x) + 0.99, 2)
        b = rng.integers(0, len(brands), N_PROD)
        for j in range(N_PROD):
            pid.append(f"{code}-{1001 + j}")
            pcat.append(name)
            pbrand.append(brands[int(b[j])])
        perm[ci] = rng.permutation(N_PROD)  # which product is the k-th most popular
    return pid, pcat, prices.tolist(), pbrand, prices, perm


_PID, _PCAT, _PPRICE, _PBRAND, _PRICE, _PERM = _catalog()
# Product Viewed properties per product; copied per event (dict.copy beats a dict display)
_VIEW_DATA = [{"Product ID": i, "Category": c, "Price": p, "Brand": b}
              for i, c, p, b in zip(_PID, _PCAT, _PPRICE, _PBRAND, strict=True)]


def _tz_offsets(mids: np.ndarray) -> np.ndarray:
    """UTC offset in seconds of each timezone at each instant: shape (len(mids), n_tz)."""
    try:
        from zoneinfo import ZoneInfo

        zones = [ZoneInfo(n) for n in _TZ_NAMES]
        out = np.empty((len(mids), len(zones)), dtype=np.int64)
        for i, m in enumerate(mids.tolist()):
            dt = datetime.fromtimestamp(m, UTC)
            for j, z in enumerate(zones):
                off = dt.astimezone(z).utcoffset()
                out[i, j] = int(off.total_seconds()) if off is not None else 0
        return out
    except Exception:  # no tzdata on this machine: standard offsets, no DST
        return np.tile(_TZ_STATIC.astype(np.int64), (len(mids), 1))


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------

def _expected_extra_records(users: int) -> float:
    """Anonymous profiles + push tokens per run, in expectation (for the progress bar)."""
    in_window = (1 - PRE_SHARE) * users
    city_p = np.diff(_CITY_CDF, prepend=0.0)
    ios = float((city_p * _IOS_SHARE[_CITY_COUNTRY]).sum())
    push = 0.85 * ((1 - ios) * 0.85 + ios * 0.55)  # app users x push opt-in
    return round(in_window * ANON_SHARE) + users * push


def estimate_chunks(users: int, events: int, chunk_size: int) -> int:
    """Approximate number of chunks ``generate`` yields (profiles + tokens + events)."""
    if users <= 0:
        return 0
    total = users + _expected_extra_records(users) + max(events, 0)
    return max(1, math.ceil(total / max(1, chunk_size)))


def generate(users: int = 50_000, events: int = 2_000_000, *, seed: int = 7,
             now: float | None = None, days: int = 90,
             chunk_size: int = 50_000) -> Iterator[list[dict]]:
    """Yield chunks of records in Nudge's native upload format.

    ``users`` identified users exactly; about ``events`` events (within a few percent) with
    ``ts`` in ``[now - days*86400, now]``; deterministic for a given (seed, now, users, events,
    days). Each chunk has ``chunk_size`` records except the last.
    """
    if users < 0 or events < 0:
        raise ValueError("users and events must be >= 0")
    if days < 1:
        raise ValueError("days must be >= 1")
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    now = time.time() if now is None else now
    return _stream(users, events, seed, now, days, chunk_size)


def _stream(users: int, events: int, seed: int, now: float, days: int,
            chunk_size: int) -> Iterator[list[dict]]:
    if users > 0:
        yield from _Demo(users, events, seed, now, days, chunk_size).run()


# ---------------------------------------------------------------------------------------------
# Implementation
# ---------------------------------------------------------------------------------------------

_COLS: dict[str, tuple[type, int | float]] = {
    "ts": (np.int64, 0), "user": (np.int64, 0), "anon": (np.bool_, False),
    "code": (np.int8, 0), "prod": (np.int64, -1), "qty": (np.int64, 0), "num": (np.int64, 0),
    "amt": (np.float64, 0.0), "sess": (np.int64, 0), "opt": (np.int64, -1),
    "opt2": (np.int64, -1),
}


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    out = {}
    lens = [len(p["ts"]) for p in parts]
    for col, (dtype, default) in _COLS.items():
        out[col] = np.concatenate(
            [p[col].astype(dtype, copy=False) if col in p else np.full(n, default, dtype=dtype)
             for p, n in zip(parts, lens, strict=True)]
        ) if parts else np.empty(0, dtype=dtype)
    return out


class _Demo:
    def __init__(self, users: int, events: int, seed: int, now: float, days: int,
                 chunk_size: int) -> None:
        self.n = users
        self.target = events
        self.seed = int(seed) % (1 << 63)
        self.now = int(now)
        self.days = days
        self.start = self.now - days * DAY
        self.chunk_size = chunk_size
        cfg = f"{seed}|{self.now}|{users}|{events}|{days}".encode()
        self.msg_prefix = f"demo-{zlib.crc32(cfg):08x}-"
        self.msg_next = 0
        self.next_sid = 1
        self.buf: list[dict] = []
        self.produced = 0
        self.carry: dict[str, np.ndarray] | None = None
        mids = self.start + np.arange(days) * DAY + DAY // 2
        self.off = _tz_offsets(mids)  # (days, n_tz)
        self._acc_mean()
        self._users()
        self._campaigns()
        self._plan()
        self._builders = {
            K_ANON: self._b_anon, K_PROFILE: self._b_profile, K_TOKEN: self._b_token,
            C_LAUNCH: self._b_launch, C_SESSION: self._b_session, C_VIEW: self._b_view,
            C_SEARCH: self._b_search, C_CART: self._b_cart, C_CHECKOUT: self._b_checkout,
            C_CHARGED: self._b_charged, C_RATED: self._b_rated, C_NVIEW: self._b_notif,
            C_NCLICK: self._b_notif, C_UNINSTALL: self._b_uninstall,
        }

    def _rng(self, *tag: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, *tag]))

    # -- setup -----------------------------------------------------------------------------

    def _acc_mean(self) -> None:
        """Mean thinning acceptance over each slot for each timezone: (days, n_tz)."""
        s0 = self.start + np.arange(self.days) * DAY
        q = np.arange(96) * 900 + 450
        loc = s0[:, None, None] + self.off[:, :, None] + q[None, None, :]
        hour = (loc // 3600) % 24
        dow = (loc // DAY + 3) % 7
        self.acc_mean = _ACC[dow, hour].mean(axis=2)

    def _users(self) -> None:
        n, rng, start, now = self.n, self._rng(1), self.start, self.now
        span = self.days * DAY
        pre = rng.random(n) < PRE_SHARE
        signup = np.where(
            pre,
            start - 3600 - rng.integers(0, 540 * DAY, n),
            start + 3600 + ((span - 7200) * rng.random(n) ** 0.85).astype(np.int64),
        )
        signup.sort()  # user ids follow signup order: u1 is the oldest customer
        self.signup = signup
        self.n_pre = int(np.searchsorted(signup, start))
        self.seg = rng.choice(5, n, p=SEG_P).astype(np.int8)
        self.city = _draw(rng, _CITY_CDF, n).astype(np.int8)
        country = _CITY_COUNTRY[self.city]
        self.country = country.astype(np.int8)
        self.tz = _CITY_TZ[self.city].astype(np.int8)
        u = rng.random(n)
        web = u < 0.15
        ios = ~web & (u < 0.15 + 0.85 * _IOS_SHARE[country])
        self.plat = np.where(web, 2, np.where(ios, 1, 0)).astype(np.int8)
        v_android = _draw(rng, _cdf(VERSION_P[0]), n)
        v_ios = _draw(rng, _cdf(VERSION_P[1]), n)
        self.ver = np.where(self.plat == 1, v_ios, v_android).astype(np.int8)
        self.browser = _draw(rng, _cdf(BROWSER_P), n).astype(np.int8)
        self.gender = rng.choice(3, n, p=[0.48, 0.49, 0.03]).astype(np.int8)
        self.age = np.clip(rng.normal(34, 11, n), 18, 75).astype(np.int8)
        self.fname = rng.integers(0, 1 << 16, n, dtype=np.uint16)
        self.lname = rng.integers(0, 1 << 16, n, dtype=np.uint16)
        self.msg_email = rng.random(n) < 0.82
        self.msg_sms = rng.random(n) < 0.35
        self.token = (self.plat < 2) & (rng.random(n) < np.where(self.plat == 1, 0.55, 0.85))
        ct = rng.random(n)
        ctcdf = np.cumsum(SEG_CTYPE_P, axis=1)[self.seg]
        self.ctype = np.minimum((ct[:, None] >= ctcdf).sum(axis=1), 3).astype(np.int8)
        # power-law activity (Pareto, alpha 1.8, capped) times segment level
        w = np.minimum((1.0 - rng.random(n)) ** (-1 / 1.8), 40.0)
        self.base = SEG_BASE[self.seg] * w / 2.25
        self.floor_u = SEG_FLOOR[self.seg]
        self.one_m_floor_u = 1 - self.floor_u
        self.neg_inv_tau = -1.0 / (SEG_TAU[self.seg] * DAY)
        pc = rng.random(n)
        self.pref = np.minimum((pc[:, None] >= _SEG_CAT_CDF[self.seg]).sum(axis=1),
                               len(CATEGORIES) - 1).astype(np.int8)
        # anonymous-first users: an exact share of in-window signups
        inwin = np.flatnonzero(~(signup < start) & (signup - start > 2 * 3600))
        n_anon = min(len(inwin), round((n - self.n_pre) * ANON_SHARE))
        self.ident = [f"u{i}" for i in range(1, n + 1)]
        self.is_anon = np.zeros(n, dtype=bool)
        self.is_anon[rng.choice(inwin, n_anon, replace=False)] = True
        gap = 300 + (rng.exponential(1.2, n) * DAY).astype(np.int64)
        self.first_seen = np.where(self.is_anon, np.maximum(start, signup - gap), signup)
        self.anon_hex = rng.integers(0, 1 << 63, n, dtype=np.int64)
        self.first_active = np.where(signup < start, start, self.first_seen)
        # churn: churners stop being active (and some uninstall the app)
        churner = self.seg == 4
        churn = np.where(
            signup < start,
            start + (rng.random(n) * span).astype(np.int64),
            signup + ((1 + rng.exponential(16, n)) * DAY).astype(np.int64),  # after login
        )
        big = np.int64(now + 10 * DAY)
        self.end_active = np.where(churner, np.minimum(churn, big), big)
        unin = churner & (self.plat < 2) & (rng.random(n) < 0.45)
        un_ts = self.end_active + 3600 + (rng.exponential(1.5, n) * DAY).astype(np.int64)
        self.un_ts = np.where(unin & (un_ts <= now), un_ts, -1)
        # one-time buyers: a single purchase, usually soon after signup
        one = self.seg == 2
        buy = np.where(
            signup < start,
            np.where(rng.random(n) < 0.55, start + (rng.random(n) * span).astype(np.int64), -1),
            signup + ((0.02 + rng.exponential(6, n)) * DAY).astype(np.int64),
        )
        ok = one & (buy >= 0) & (buy < np.minimum(self.end_active, now - 3600))
        self.buy_ts = np.where(ok, np.maximum(buy, self.first_active), -1)
        # per-day lookups of sorted times
        self.anon_order = np.flatnonzero(self.is_anon)
        self.anon_order = self.anon_order[np.argsort(self.first_seen[self.anon_order],
                                                     kind="stable")]
        self.anon_sorted_ts = self.first_seen[self.anon_order]
        self.buy_order = np.flatnonzero(self.buy_ts >= 0)
        self.buy_order = self.buy_order[np.argsort(self.buy_ts[self.buy_order], kind="stable")]
        self.buy_sorted_ts = self.buy_ts[self.buy_order]
        self.un_order = np.flatnonzero(self.un_ts >= 0)
        self.un_order = self.un_order[np.argsort(self.un_ts[self.un_order], kind="stable")]
        self.un_sorted_ts = self.un_ts[self.un_order]
        # event-rate factor per day (a two-day sale ~3 weeks ago, when the window allows)
        self.boost = np.ones(self.days)
        self.sale_days: set[int] = set()
        if self.days >= 28:
            d0 = self.days - 21
            wd = int(((self.start + d0 * DAY) // DAY + 3) % 7)
            d0 += (5 - wd) % 7 - (7 if (5 - wd) % 7 > 3 else 0)  # nearest Saturday
            for d in (d0, d0 + 1):
                if 0 <= d < self.days:
                    self.sale_days.add(d)
                    self.boost[d] = SALE_BOOST

    def _campaigns(self) -> None:
        """Scheduled push/email campaigns: (day, channel 0=push 1=email, local hour, name)."""
        self.campaigns: list[tuple[int, int, int, str]] = []
        self.day_campaigns: list[list[int]] = [[] for _ in range(self.days)]
        week = 0
        for d in range(self.days):
            wd = int(((self.start + d * DAY + DAY // 2) // DAY + 3) % 7)
            todo = []
            if wd == 1:
                cat = CATEGORIES[week % len(CATEGORIES)][0]
                todo.append((0, 18, f"New arrivals in {cat}"))
                week += 1
            elif wd == 3:
                todo.append((1, 9, "Top picks for you this week"))
            elif wd == 5 and d not in self.sale_days:
                todo.append((0, 11, "Weekend flash sale"))
            if d + 1 in self.sale_days and d not in self.sale_days:
                todo.append((1, 19, "Big Sale starts tomorrow"))
            if d in self.sale_days and d - 1 not in self.sale_days:
                todo.append((0, 9, "Big Sale is live: up to 50% off"))
            for ch, hour, name in todo:
                self.day_campaigns[d].append(len(self.campaigns))
                self.campaigns.append((d, ch, hour, name))
        self.cmp_id = [f"cmp-{1001 + i}" for i in range(len(self.campaigns))]
        self.cmp_name = [c[3] for c in self.campaigns]
        self.cmp_channel = ["push" if c[1] == 0 else "email" for c in self.campaigns]

    @staticmethod
    def _eps() -> tuple[np.ndarray, np.ndarray]:
        """Expected events per ordinary session and per forced purchase session, by segment."""
        m, p = SEG_VIEWS, SEG_PCART
        q = (m - 1) / m
        s = 1 - p
        ev = (1 - ZERO_VIEW) * m
        p_nocart = ZERO_VIEW + (1 - ZERO_VIEW) * s * (1 - q) / (1 - q * s)
        eck = (1 - p_nocart) * SEG_PCK
        ech = eck * SEG_PCH
        eps = 1 + ev + SEG_SEARCH + p * ev + eck + ech + ech * RATE_AFTER + RATE_RANDOM
        eps_buy = 1 + m + SEG_SEARCH + 1 + p * (m - 1) + 2 + RATE_AFTER + RATE_RANDOM
        return eps, eps_buy

    def _rate(self, d: int) -> np.ndarray:
        """Session rate of every user in slot d (before the global scale k, incl. over-sampling
        for thinning); 0 for users not active in the slot."""
        s0 = self.start + d * DAY
        s1 = s0 + DAY
        age = np.maximum((s0 + DAY // 2) - self.first_seen, 0) * self.neg_inv_tau
        r = self.floor_u + self.one_m_floor_u * np.exp(age)
        r *= self.base
        r *= (self.first_active < s1) & (self.end_active > s0)
        return r

    def _plan(self) -> None:
        """Expected events per day, to scale the session rate so the total meets the target."""
        eps, eps_buy = self._eps()
        self.eps = eps
        days = self.days
        L = np.zeros(days)
        fixed = np.zeros(days)
        notif = np.zeros(days)
        eps_u = eps[self.seg]
        for d in range(days):
            s0 = self.start + d * DAY
            s1 = s0 + DAY
            alive = np.minimum(s1, self.end_active) - np.maximum(s0, self.first_active)
            alive = np.clip(alive * (1 / DAY), 0, 1)
            lam = self._rate(d) * alive * self.acc_mean[d][self.tz]
            L[d] = float((lam * eps_u).sum()) * self.boost[d] * _CAND  # no BLAS: threads thrash
            for c in self.day_campaigns[d]:
                notif[d] += self._notif_expect(c, s0 + DAY // 2)

        def per_day(ts: np.ndarray, w: np.ndarray) -> np.ndarray:
            d = (ts - self.start) // DAY
            ok = (d >= 0) & (d < days)
            return np.bincount(d[ok], weights=w[ok], minlength=days)[:days]

        # sessions that always happen: at signup, at an anonymous first visit, the purchase of
        # a one-time buyer. With very few events per user they are sampled down to at most
        # half the target, so that the total still matches it.
        inwin = np.arange(self.n_pre, self.n)
        forced = per_day(self.signup[inwin], eps[self.seg[inwin]])
        an = self.anon_order
        forced += per_day(self.first_seen[an], eps[self.seg[an]])
        b = self.buy_order
        forced += per_day(self.buy_ts[b], eps_buy[self.seg[b]])
        self.f_keep = 1.0
        if forced.sum() > 0.5 * self.target:
            self.f_keep = 0.5 * self.target / forced.sum()
        fixed += self.f_keep * forced
        fixed += per_day(self.un_sorted_ts, np.ones(len(self.un_sorted_ts)))
        total_notif = notif.sum()
        self.q = 1.0
        if total_notif > 0:
            self.q = float(min(1.0, NOTIF_SHARE * self.target / total_notif))
        fixed += self.q * notif
        self.k0 = max(0.0, (self.target - fixed.sum()) / L.sum()) if L.sum() > 0 else 0.0
        # suffix sums for the feedback controller
        self.L_rem = np.cumsum(L[::-1])[::-1]
        self.fixed_rem = np.cumsum(fixed[::-1])[::-1]

    def _notif_probs(self, ch: int, seg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e = SEG_ENG[seg]
        if ch == 0:  # push: rendered / tapped
            return np.minimum(0.55 * e, 0.95), np.minimum(0.12 * e, 0.9)
        return np.minimum(0.22 * e, 0.95), np.minimum(0.15 * e, 0.9)  # email: opened / clicked

    def _eligible(self, c: int, send: np.ndarray | int) -> np.ndarray:
        ch = self.campaigns[c][1]
        ok = (self.signup <= send) & (self.first_active <= send) & (send < self.end_active)
        return ok & (self.token if ch == 0 else self.msg_email)

    def _notif_expect(self, c: int, mid: int) -> float:
        u = np.flatnonzero(self._eligible(c, mid))
        seg = self.seg[u]
        pv, pc = self._notif_probs(self.campaigns[c][1], seg)
        return float(np.sum(pv * (1 + pc * (1 + self.eps[seg]))))

    # -- the stream ----------------------------------------------------------------------------

    def run(self) -> Iterator[list[dict]]:
        # users who signed up before the window: profile (+ token) at the window start
        pre = np.arange(self.n_pre)
        tok = pre[self.token[pre]]
        yield from self._emit(
            np.full(len(pre) + len(tok), self.start, dtype=np.int64),
            np.concatenate([np.full(len(pre), K_PROFILE), np.full(len(tok), K_TOKEN)]),
            np.concatenate([pre, tok]), None)
        for d in range(self.days):
            yield from self._day(d)
        if self.buf:
            yield self.buf
            self.buf = []

    def _day(self, d: int) -> Iterator[list[dict]]:
        yield from self._emit(*self._slot(d))

    def profile_rows(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(ts, kind, row) of every profile and token record, in stream order, without the
        events: the users who signed up before the window, then the rest (what ``_slot``
        gives each day; a stable sort of the same keys keeps the same order)."""
        pre = np.arange(self.n_pre)
        tok = pre[self.token[pre]]
        yield (np.full(len(pre) + len(tok), self.start, dtype=np.int64),
               np.concatenate([np.full(len(pre), K_PROFILE), np.full(len(tok), K_TOKEN)]),
               np.concatenate([pre, tok]))
        new = np.arange(self.n_pre, self.n)
        new = new[(self.signup[new] >= self.start) & (self.signup[new] < self.start
                                                      + self.days * DAY)]
        anon = self.anon_order[(self.anon_sorted_ts >= self.start)
                               & (self.anon_sorted_ts < self.start + self.days * DAY)]
        new_tok = new[self.token[new]]
        yield (np.concatenate([self.first_seen[anon], self.signup[new], self.signup[new_tok]]),
               np.concatenate([np.full(len(anon), K_ANON), np.full(len(new), K_PROFILE),
                               np.full(len(new_tok), K_TOKEN)]),
               np.concatenate([anon, new, new_tok]))

    def _slot(self, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Slot ``d``'s records as (ts, kind, row, events): the profile and token records of
        the slot (rows are users) and its events (rows index the columns ``events``)."""
        rng = self._rng(2, d)
        s0 = self.start + d * DAY
        s1 = s0 + DAY
        now = self.now
        # profile records of the slot
        lo, hi = np.searchsorted(self.signup, [s0, s1])
        lo = max(lo, self.n_pre)
        new = np.arange(lo, hi)
        a_lo, a_hi = np.searchsorted(self.anon_sorted_ts, [s0, s1])
        anon_new = self.anon_order[a_lo:a_hi]
        new_tok = new[self.token[new]]
        p_ts = np.concatenate([self.first_seen[anon_new], self.signup[new], self.signup[new_tok]])
        p_kind = np.concatenate([np.full(len(anon_new), K_ANON), np.full(len(new), K_PROFILE),
                                 np.full(len(new_tok), K_TOKEN)])
        p_row = np.concatenate([anon_new, new, new_tok])

        # events of earlier slots that happen in this one (late opens, sessions past midnight)
        parts: list[dict[str, np.ndarray]] = [self.carry] if self.carry is not None else []
        self.carry = None
        # campaigns -> notification events and click-through sessions
        sn, sa = new, anon_new
        if self.f_keep < 1.0:
            sn = sn[rng.random(len(sn)) < self.f_keep]
            sa = sa[rng.random(len(sa)) < self.f_keep]
        f_users = [sn, sa]
        f_ts = [self.signup[sn], self.first_seen[sa]]
        f_buy = [np.zeros(len(sn), bool), np.zeros(len(sa), bool)]
        for c in self.day_campaigns[d]:
            part, cu, cts = self._notifications(rng, c, d, s0)
            parts.append(part)
            f_users.append(cu)
            f_ts.append(cts)
            f_buy.append(np.zeros(len(cu), bool))
        # one-time purchases
        b_lo, b_hi = np.searchsorted(self.buy_sorted_ts, [s0, s1])
        bu = self.buy_order[b_lo:b_hi]
        if self.f_keep < 1.0:
            bu = bu[rng.random(len(bu)) < self.f_keep]
        f_users.append(bu)
        f_ts.append(self.buy_ts[bu])
        f_buy.append(np.ones(len(bu), bool))
        # uninstalls
        u_lo, u_hi = np.searchsorted(self.un_sorted_ts, [s0, s1])
        uu = self.un_order[u_lo:u_hi]
        parts.append({"ts": self.un_ts[uu], "user": uu,
                      "code": np.full(len(uu), C_UNINSTALL, np.int8)})
        # ordinary sessions, rate-controlled towards the event target
        kd = self.k0
        if self.k0 > 0 and self.L_rem[d] > 0:
            want = (self.target - self.produced - self.fixed_rem[d]) / self.L_rem[d]
            kd = float(np.clip(want, 0.5 * self.k0, 2.0 * self.k0))
        cnt = rng.poisson(self._rate(d) * (kd * self.boost[d] * _CAND))
        cu = np.repeat(np.arange(self.n), cnt)
        cts = s0 + rng.integers(0, DAY, len(cu))
        loc = cts + self.off[d, self.tz[cu]]
        acc = _ACC[(loc // DAY + 3) % 7, (loc // 3600) % 24]
        keep = ((rng.random(len(cu)) < acc) & (cts >= self.first_active[cu])
                & (cts < self.end_active[cu]))
        f_users.append(cu[keep])
        f_ts.append(cts[keep])
        f_buy.append(np.zeros(int(keep.sum()), bool))
        su = np.concatenate(f_users)
        st = np.concatenate(f_ts)
        sb = np.concatenate(f_buy)
        parts.append(self._sessions(rng, su, st, sb, d in self.sale_days))

        E = _concat(parts)
        un = self.un_ts[E["user"]]
        keep_e = (E["ts"] <= now) & ((un < 0) | (E["ts"] < un) | (E["code"] == C_UNINSTALL))
        late = E["ts"] >= s1
        if late.any():  # keep the stream in ts order: emit these with the slot they fall in
            self.carry = {k: v[late & keep_e] for k, v in E.items()}
            keep_e &= ~late
        if not keep_e.all():
            E = {k: v[keep_e] for k, v in E.items()}
        ne = len(E["ts"])
        self.produced += ne
        ts = np.concatenate([p_ts, E["ts"]])
        kind = np.concatenate([p_kind, E["code"].astype(np.int64)])
        row = np.concatenate([p_row, np.arange(ne)])
        return ts, kind, row, E

    def _notifications(self, rng: np.random.Generator, c: int, d: int, s0: int
                       ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        _day, ch, hour, _name = self.campaigns[c]
        off = self.off[d][self.tz]
        send = s0 + (hour * 3600 - (s0 + off) % DAY) % DAY  # the campaign hour, user-local
        u = np.flatnonzero(self._eligible(c, send))
        u = u[rng.random(len(u)) < self.q]
        pv, pc = self._notif_probs(ch, self.seg[u])
        viewed = rng.random(len(u)) < pv
        u, pc = u[viewed], pc[viewed]
        vdelay = rng.exponential(900 if ch == 0 else 3 * 3600, len(u))
        vts = send[u] + 1 + vdelay.astype(np.int64)
        clicked = rng.random(len(u)) < pc
        cu = u[clicked]
        cdelay = rng.exponential(120 if ch == 0 else 600, len(cu))
        cts = vts[clicked] + 2 + cdelay.astype(np.int64)
        ok_v = (vts <= self.now) & (vts < self.end_active[u])
        ok_c = (cts <= self.now) & (cts < self.end_active[cu])
        cu, cts = cu[ok_c], cts[ok_c]
        part = {
            "ts": np.concatenate([vts[ok_v], cts]),
            "user": np.concatenate([u[ok_v], cu]),
            "code": np.concatenate([np.full(int(ok_v.sum()), C_NVIEW, np.int8),
                                    np.full(len(cu), C_NCLICK, np.int8)]),
            "num": np.full(int(ok_v.sum()) + len(cu), c, np.int64),
        }
        sess_ts = cts + 3 + rng.integers(0, 8, len(cu))
        return part, cu, sess_ts

    def _sessions(self, rng: np.random.Generator, su: np.ndarray, st: np.ndarray,
                  sbuy: np.ndarray, sale: bool) -> dict[str, np.ndarray]:
        S = len(su)
        if S == 0:
            return {"ts": np.empty(0, np.int64)}
        seg = self.seg[su]
        sanon = self.is_anon[su] & (st < self.signup[su])
        sid = self.next_sid + np.arange(S)
        self.next_sid += S
        ar = np.arange(S)
        # product views
        V = rng.geometric(1.0 / SEG_VIEWS[seg])
        V[(rng.random(S) < ZERO_VIEW) & ~sbuy] = 0
        vs = np.repeat(ar, V)
        nv = len(vs)
        vcat = np.where(rng.random(nv) < PREF_P, self.pref[su[vs]], _draw(rng, _CAT_CDF, nv))
        rank = _draw(rng, _ZIPF_CDF, nv)
        vprod = vcat * N_PROD + _PERM[vcat, rank]
        vkey = rng.random(nv)
        # add to cart (a forced purchase session carts its first view)
        cart = rng.random(nv) < SEG_PCART[seg[vs]]
        first = np.cumsum(V) - V
        cart[first[sbuy & (V > 0)]] = True
        cs, cprod, ckey = vs[cart], vprod[cart], vkey[cart] + 1e-6
        extra = SEG_QTY[seg[cs]] + np.where(cprod // N_PROD == GROCERY, 1.0, 0.0)
        qty = 1 + rng.poisson(extra)
        ncart = np.bincount(cs, minlength=S)
        items = np.bincount(cs, weights=qty, minlength=S).astype(np.int64)
        value = np.bincount(cs, weights=qty * _PRICE[cprod], minlength=S)
        # the order's Category is that of its biggest line
        top_prod = np.full(S, -1, np.int64)
        if len(cs):
            by = np.lexsort((qty * _PRICE[cprod], cs))
            last = np.append(np.flatnonzero(np.diff(cs[by])), len(cs) - 1)
            top_prod[cs[by[last]]] = cprod[by[last]]
        # checkout (needs login) and charge
        ck = (ncart > 0) & ~sanon & ((rng.random(S) < SEG_PCK[seg]) | sbuy)
        ch = ck & ((rng.random(S) < SEG_PCH[seg]) | sbuy)
        rated = ~sanon & ((ch & (rng.random(S) < RATE_AFTER)) | (rng.random(S) < RATE_RANDOM))
        cks, chs, rs = np.flatnonzero(ck), np.flatnonzero(ch), np.flatnonzero(rated)
        nch = len(chs)
        if sale:
            coupon = np.where(rng.random(nch) < 0.7, 3, _draw(rng, _cdf([0.4, 0.35, 0.25]), nch))
            coupon = np.where(rng.random(nch) < 0.55, coupon, -1)
        else:
            coupon = np.where(rng.random(nch) < 0.18,
                              _draw(rng, _cdf([0.4, 0.35, 0.25]), nch), -1)
        val = value[chs]
        ship = np.where((val < 35) & (coupon != 2), 4.99, 0.0)
        amount = np.round(val * (1 - _DISCOUNT[coupon]) + ship, 2)
        pay_cdf = _PAY_CDF[self.country[su[chs]]]
        pay = np.minimum((rng.random(nch)[:, None] >= pay_cdf).sum(axis=1),
                         len(PAYMENT_METHODS) - 1)
        # searches
        NS = rng.poisson(SEG_SEARCH[seg])
        ss = np.repeat(ar, NS)
        nsr = len(ss)
        scat = np.where(rng.random(nsr) < PREF_P, self.pref[su[ss]], _draw(rng, _CAT_CDF, nsr))
        qidx = _QOFF[scat] + (rng.random(nsr) * _QLEN[scat]).astype(np.int64)
        results = np.where(rng.random(nsr) < 0.07, 0,
                           np.minimum(rng.lognormal(3.3, 1.0, nsr).astype(np.int64) + 1, 5000))
        skey = rng.random(nsr)
        stars = _draw(rng, _cdf(STARS_P), len(rs)) + 1
        launch = np.where(self.plat[su] == 2, C_SESSION, C_LAUNCH)
        utm = _draw(rng, _cdf(UTM_P), S)

        def full(n: int, v: float) -> np.ndarray:
            return np.full(n, v)

        sess = np.concatenate([ar, vs, ss, cs, cks, chs, rs])
        key = np.concatenate([full(S, -1), vkey, skey, ckey, full(len(cks), 2),
                              full(nch, 3), full(len(rs), 4)])
        code = np.concatenate([launch, full(nv, C_VIEW), full(nsr, C_SEARCH),
                               full(len(cs), C_CART), full(len(cks), C_CHECKOUT),
                               full(nch, C_CHARGED), full(len(rs), C_RATED)]).astype(np.int8)
        prod = np.concatenate([full(S, -1), vprod, full(nsr, -1), cprod, full(len(cks), -1),
                               top_prod[chs], full(len(rs), -1)]).astype(np.int64)
        qtyc = np.concatenate([np.zeros(S + nv + nsr, np.int64), qty,
                               np.zeros(len(cks) + nch + len(rs), np.int64)])
        num = np.concatenate([np.zeros(S + nv, np.int64), results, np.zeros(len(cs), np.int64),
                              items[cks], items[chs], stars]).astype(np.int64)
        amt = np.concatenate([np.zeros(S + nv + nsr + len(cs)), np.round(value[cks], 2),
                              amount, np.zeros(len(rs))])
        opt = np.concatenate([utm, full(nv, -1), qidx, full(len(cs) + len(cks), -1), pay,
                              full(len(rs), -1)]).astype(np.int64)
        opt2 = np.concatenate([full(S + nv + nsr + len(cs) + len(cks), -1), coupon,
                               full(len(rs), -1)]).astype(np.int64)
        order = np.lexsort((key, sess))
        sess, code = sess[order], code[order]
        n = len(sess)
        gap = _GAP_MIN[code] + _GAP_MEAN[code] * rng.exponential(1.0, n)
        csum = np.cumsum(gap)
        first_pos = np.searchsorted(sess, ar)  # each session starts with its launch event
        offs = csum - csum[first_pos][sess]
        last_pos = np.append(first_pos[1:], n) - 1
        num = num[order]
        num[first_pos] = (offs[last_pos] + 5 + rng.exponential(40.0, S)).astype(np.int64)
        ts = st[sess] + offs.astype(np.int64)
        eu = su[sess]
        return {  # a session that runs into the login switches to the identity there
            "ts": ts, "user": eu, "anon": sanon[sess] & (ts < self.signup[eu]),
            "code": code, "prod": prod[order], "qty": qtyc[order], "num": num,
            "amt": amt[order], "sess": sid[sess], "opt": opt[order], "opt2": opt2[order],
        }

    # -- records -------------------------------------------------------------------------------

    def _emit(self, ts: np.ndarray, kind: np.ndarray, row: np.ndarray,
              E: dict[str, np.ndarray] | None) -> Iterator[list[dict]]:
        prio = np.minimum(kind, 3)
        order = np.argsort(ts * 4 + prio, kind="stable")
        ts, kind, row = ts[order], kind[order], row[order]
        n, i, cs = len(ts), 0, self.chunk_size
        while i < n:
            take = min(n - i, cs - len(self.buf))
            # The cyclic GC would rescan the young dicts many times while a chunk is built
            # (~35% of the run time); nothing built here is cyclic, so pause it meanwhile.
            gc_on = gc.isenabled()
            gc.disable()
            try:
                recs = self._build(ts[i:i + take], kind[i:i + take], row[i:i + take], E)
            finally:
                if gc_on:
                    gc.enable()
            if self.buf:
                self.buf.extend(recs)
            else:
                self.buf = recs
            i += take
            if len(self.buf) >= cs:
                yield self.buf
                self.buf = []

    def _build(self, ts: np.ndarray, kind: np.ndarray, row: np.ndarray,
               E: dict[str, np.ndarray] | None) -> list[dict]:
        n = len(kind)
        is_evt = kind >= 3
        msg = np.zeros(n, np.int64)
        ne = int(is_evt.sum())
        msg[is_evt] = self.msg_next + np.arange(ne)
        self.msg_next += ne
        kinds = np.unique(kind).tolist()
        if len(kinds) == 1:
            return self._builders[kinds[0]](row, ts, msg, E)
        recs: list[dict] = []
        poss = []
        for k in kinds:
            pos = np.flatnonzero(kind == k)
            recs.extend(self._builders[k](row[pos], ts[pos], msg[pos], E))
            poss.append(pos)
        inv = np.argsort(np.concatenate(poss), kind="stable").tolist()
        return list(itemgetter(*inv)(recs)) if n > 1 else recs

    def _names(self, rows: np.ndarray) -> tuple[list[int], list[int]]:
        """Indices into _FIRST/_FIRST_A and _LAST/_LAST_A for users ``rows``."""
        pool = _COUNTRY_POOL[self.country[rows]]
        g = self.gender[rows]
        fi = _FIRST_OFF[pool, g] + self.fname[rows] % _FIRST_LEN[pool, g]
        li = _LAST_OFF[pool] + self.lname[rows] % _LAST_LEN[pool]
        return fi.tolist(), li.tolist()

    def _b_profile(self, rows, ts, msg, E) -> list[dict]:
        out = []
        cols = [a[rows].tolist() for a in (
            self.city, self.country, self.gender, self.age, self.signup, self.tz, self.plat,
            self.ver, self.msg_email, self.token, self.msg_sms, self.ctype, self.is_anon,
            self.anon_hex)]
        fis, lis = self._names(rows)
        ident = self.ident
        for u, t, fi, li, city, co, g, age, sg, tz, pl, ver, me, mp, ms, ct, an, ah in zip(
                rows.tolist(), ts.tolist(), fis, lis, *cols, strict=True):
            fa, la, n = _FIRST_A[fi], _LAST_A[li], u + 1
            pattern = u % 4
            local = (f"{fa}.{la}{n}" if pattern == 0 else f"{fa}{la}{n}" if pattern == 1
                     else f"{fa[0]}{la}{n}" if pattern == 2 else f"{fa}_{la}{n}")
            pd = {
                "Name": f"{_FIRST[fi]} {_LAST[li]}", "City": _CITY_NAMES[city],
                "Country": _COUNTRY_NAMES[co],
                "Gender": "MFO"[g], "Age": age, "Signup Date": f"$D_{sg}",
                "Timezone": _TZ_NAMES[tz], "Platform": PLATFORMS[pl],
            }
            if pl < 2:
                pd["App Version"] = APP_VERSIONS[ver]
            pd["MSG-email"] = me
            pd["MSG-push"] = mp
            pd["MSG-sms"] = ms
            pd["Customer Type"] = CUSTOMER_TYPES[ct]
            rec = {"type": "profile", "identity": ident[u], "ts": t,
                   "email": f"{local}@{EMAIL_DOMAINS[u % 3]}", "profileData": pd}
            if an:
                rec["objectId"] = f"anon-{ah:016x}"
            out.append(rec)
        return out

    def _b_anon(self, rows, ts, msg, E) -> list[dict]:
        out = []
        cols = [a[rows].tolist() for a in (self.plat, self.city, self.country, self.tz,
                                           self.ver, self.anon_hex)]
        for t, pl, city, co, tz, ver, ah in zip(ts.tolist(), *cols, strict=True):
            pd = {"Platform": PLATFORMS[pl], "City": _CITY_NAMES[city],
                  "Country": _COUNTRY_NAMES[co], "Timezone": _TZ_NAMES[tz]}
            if pl < 2:
                pd["App Version"] = APP_VERSIONS[ver]
            out.append({"type": "profile", "objectId": f"anon-{ah:016x}", "ts": t,
                        "profileData": pd})
        return out

    def _b_token(self, rows, ts, msg, E) -> list[dict]:
        """Fake but well-formed device tokens: APNs 64 hex chars, FCM '<id>:APA91b<...>'."""
        out = []
        salt = f"nudge-demo:{self.seed}:"
        for u, t, pl in zip(rows.tolist(), ts.tolist(), self.plat[rows].tolist(), strict=True):
            h = hashlib.blake2b(f"{salt}{u}".encode(), digest_size=64).hexdigest()
            if pl == 1:
                tok = {"id": h[:64], "type": "apns"}
            else:
                tok = {"id": f"{h[:22]}:APA91b{h[22:128]}", "type": "fcm"}
            out.append({"type": "token", "identity": self.ident[u], "ts": t, "tokenData": tok})
        return out

    def _who(self, E, rows) -> tuple:
        """Per event: the identifier key ("identity" or, before login, "objectId") and value."""
        u = E["user"][rows]
        a = E["anon"][rows]
        if len(u) < 2:
            ids = [self.ident[i] for i in u.tolist()]
        else:
            ids = itemgetter(*u.tolist())(self.ident)
        if not a.any():
            return repeat("identity"), ids
        al = a.tolist()
        hx = self.anon_hex[u].tolist()
        keys = ["objectId" if x else "identity" for x in al]
        vals = [f"anon-{h:016x}" if x else i for x, h, i in zip(al, hx, ids, strict=True)]
        return keys, vals

    def _b_view(self, rows, ts, msg, E) -> list[dict]:
        K, W = self._who(E, rows)
        pre, vd = self.msg_prefix, _VIEW_DATA
        return [{"type": "event", k: w, "ts": t, "evtName": "Product Viewed",
                 "evtData": vd[p].copy(), "msgId": f"{pre}{m}"}
                for k, w, t, p, m in zip(K, W, ts.tolist(), E["prod"][rows].tolist(),
                                         msg.tolist(), strict=False)]

    def _b_cart(self, rows, ts, msg, E) -> list[dict]:
        K, W = self._who(E, rows)
        pre, pid, pcat, ppr = self.msg_prefix, _PID, _PCAT, _PPRICE
        return [{"type": "event", k: w, "ts": t, "evtName": "Added To Cart",
                 "evtData": {"Product ID": pid[p], "Category": pcat[p], "Price": ppr[p],
                             "Quantity": q, "Cart ID": f"CRT-{s:07d}"},
                 "msgId": f"{pre}{m}"}
                for k, w, t, p, q, s, m in zip(K, W, ts.tolist(), E["prod"][rows].tolist(),
                                               E["qty"][rows].tolist(), E["sess"][rows].tolist(),
                                               msg.tolist(), strict=False)]

    def _b_search(self, rows, ts, msg, E) -> list[dict]:
        K, W = self._who(E, rows)
        pre = self.msg_prefix
        return [{"type": "event", k: w, "ts": t, "evtName": "Searched",
                 "evtData": {"Query": _QUERIES[q], "Results": r}, "msgId": f"{pre}{m}"}
                for k, w, t, q, r, m in zip(K, W, ts.tolist(), E["opt"][rows].tolist(),
                                            E["num"][rows].tolist(), msg.tolist(), strict=False)]

    def _b_launch(self, rows, ts, msg, E) -> list[dict]:
        K, W = self._who(E, rows)
        u = E["user"][rows]
        pre = self.msg_prefix
        return [{"type": "event", k: w, "ts": t, "evtName": "App Launched",
                 "evtData": {"Platform": PLATFORMS[p], "App Version": APP_VERSIONS[v],
                             "Session Length": sl},
                 "msgId": f"{pre}{m}"}
                for k, w, t, p, v, sl, m in zip(K, W, ts.tolist(), self.plat[u].tolist(),
                                                self.ver[u].tolist(), E["num"][rows].tolist(),
                                                msg.tolist(), strict=False)]

    def _b_session(self, rows, ts, msg, E) -> list[dict]:
        K, W = self._who(E, rows)
        u = E["user"][rows]
        pre = self.msg_prefix
        return [{"type": "event", k: w, "ts": t, "evtName": "Session Started",
                 "evtData": {"Platform": "Web", "Browser": BROWSERS[b],
                             "UTM Source": UTM_SOURCES[s], "Session Length": sl},
                 "msgId": f"{pre}{m}"}
                for k, w, t, b, s, sl, m in zip(K, W, ts.tolist(), self.browser[u].tolist(),
                                                E["opt"][rows].tolist(), E["num"][rows].tolist(),
                                                msg.tolist(), strict=False)]

    def _b_checkout(self, rows, ts, msg, E) -> list[dict]:
        K, W = self._who(E, rows)
        pre = self.msg_prefix
        return [{"type": "event", k: w, "ts": t, "evtName": "Checkout Started",
                 "evtData": {"Cart ID": f"CRT-{s:07d}", "Items": i, "Value": v},
                 "msgId": f"{pre}{m}"}
                for k, w, t, s, i, v, m in zip(K, W, ts.tolist(), E["sess"][rows].tolist(),
                                               E["num"][rows].tolist(), E["amt"][rows].tolist(),
                                               msg.tolist(), strict=False)]

    def _b_charged(self, rows, ts, msg, E) -> list[dict]:
        K, W = self._who(E, rows)
        pre = self.msg_prefix
        out = []
        for k, w, t, s, i, a, p, pay, c, m in zip(
                K, W, ts.tolist(), E["sess"][rows].tolist(), E["num"][rows].tolist(),
                E["amt"][rows].tolist(), E["prod"][rows].tolist(), E["opt"][rows].tolist(),
                E["opt2"][rows].tolist(), msg.tolist(), strict=False):
            data = {"Amount": a, "Category": _PCAT[p], "Items": i,
                    "Payment Method": PAYMENT_METHODS[pay], "Cart ID": f"CRT-{s:07d}"}
            if c >= 0:
                data["Coupon"] = COUPONS[c]
            out.append({"type": "event", k: w, "ts": t, "evtName": "Charged", "evtData": data,
                        "msgId": f"{pre}{m}"})
        return out

    def _b_rated(self, rows, ts, msg, E) -> list[dict]:
        K, W = self._who(E, rows)
        pre = self.msg_prefix
        return [{"type": "event", k: w, "ts": t, "evtName": "Rated", "evtData": {"Stars": s},
                 "msgId": f"{pre}{m}"}
                for k, w, t, s, m in zip(K, W, ts.tolist(), E["num"][rows].tolist(),
                                         msg.tolist(), strict=False)]

    def _b_notif(self, rows, ts, msg, E) -> list[dict]:
        K, W = self._who(E, rows)
        pre = self.msg_prefix
        ids, names, chans = self.cmp_id, self.cmp_name, self.cmp_channel
        evt = ("Notification Viewed", "Notification Clicked")
        return [{"type": "event", k: w, "ts": t, "evtName": evt[code - C_NVIEW],
                 "evtData": {"Campaign ID": ids[c], "Campaign Name": names[c],
                             "Channel": chans[c]},
                 "msgId": f"{pre}{m}"}
                for k, w, t, code, c, m in zip(K, W, ts.tolist(), E["code"][rows].tolist(),
                                               E["num"][rows].tolist(), msg.tolist(), strict=False)]

    def _b_uninstall(self, rows, ts, msg, E) -> list[dict]:
        K, W = self._who(E, rows)
        pre = self.msg_prefix
        return [{"type": "event", k: w, "ts": t, "evtName": "App Uninstalled", "evtData": {},
                 "msgId": f"{pre}{m}"}
                for k, w, t, m in zip(K, W, ts.tolist(), msg.tolist(), strict=False)]
