//! A PAN-free corpus of realistic values (issue #17): what the detector must leave alone.
//! Deterministic (a fixed-seed generator), shared by `tests/mask_corpus.rs` and the `mask`
//! bench.

/// splitmix64: small, fast, good enough to spread digits.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + self.below(10) as u8))
            .collect()
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// An IBAN of `country` with a random BBAN of `digits` digits and correct check digits.
fn iban(rng: &mut Rng, country: &str, bban: String) -> String {
    let numeric: String = bban
        .chars()
        .chain(country.chars())
        .chain("00".chars())
        .map(|c| {
            if c.is_ascii_digit() {
                c.to_string()
            } else {
                (c as u32 - 'A' as u32 + 10).to_string()
            }
        })
        .collect();
    let rem = numeric
        .bytes()
        .fold(0u32, |r, b| (r * 10 + u32::from(b - b'0')) % 97);
    let check = 98 - rem;
    let compact = format!("{country}{check:02}{bban}");
    if rng.below(2) == 0 {
        compact
    } else {
        compact
            .as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The kinds of values in the corpus, by name.
pub const KINDS: &[&str] = &[
    "ms timestamp",
    "us epoch",
    "timestamp",
    "date",
    "uuid",
    "phone",
    "iban",
    "order number",
    "tracking number",
    "amount",
    "ip address",
    "float",
    "id",
    "sentence",
];

/// Value `i` of the corpus and its kind.
pub fn value(rng: &mut Rng, i: usize) -> (&'static str, String) {
    let kind = KINDS[i % KINDS.len()];
    let v = match kind {
        "ms timestamp" => (1_500_000_000_000 + rng.below(300_000_000_000)).to_string(),
        "us epoch" => (1_500_000_000_000_000 + rng.below(300_000_000_000_000)).to_string(),
        "timestamp" => format!(
            "20{:02}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+{:02}",
            rng.below(30),
            1 + rng.below(12),
            1 + rng.below(28),
            rng.below(24),
            rng.below(60),
            rng.below(60),
            rng.below(1_000_000),
            rng.below(13)
        ),
        "date" => match rng.below(3) {
            0 => format!(
                "20{:02}-{:02}-{:02}",
                rng.below(30),
                1 + rng.below(12),
                1 + rng.below(28)
            ),
            1 => format!(
                "{:02}/{:02}/20{:02}",
                1 + rng.below(28),
                1 + rng.below(12),
                rng.below(30)
            ),
            _ => format!(
                "{:02}.{:02}.20{:02}",
                1 + rng.below(28),
                1 + rng.below(12),
                rng.below(30)
            ),
        },
        "uuid" => {
            let (a, b) = (rng.next(), rng.next());
            format!(
                "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
                a >> 32,
                (a >> 16) & 0xffff,
                a & 0xfff,
                0x8000 | (b >> 48) & 0x3fff,
                b & 0xffff_ffff_ffff
            )
        }
        "phone" => match rng.below(7) {
            0 => format!("+1 ({}) {}-{}", rng.digits(3), rng.digits(3), rng.digits(4)),
            1 => format!("+44 20 {} {}", rng.digits(4), rng.digits(4)),
            2 => format!(
                "+33 {} {} {} {} {}",
                1 + rng.below(9),
                rng.digits(2),
                rng.digits(2),
                rng.digits(2),
                rng.digits(2)
            ),
            3 => format!("{}.{}.{}", rng.digits(3), rng.digits(3), rng.digits(4)),
            4 => format!("+49 30 {}", rng.digits(8)),
            5 => format!("+86 138 {} {}", rng.digits(4), rng.digits(4)),
            _ => format!("00{} {} {}", rng.digits(2), rng.digits(3), rng.digits(7)),
        },
        "iban" => {
            let (country, bban) = match rng.below(6) {
                0 => ("DE", rng.digits(18)),
                1 => ("ES", rng.digits(20)),
                2 => ("FR", format!("{}{}", rng.digits(21), rng.digits(2))),
                3 => ("GB", format!("NWBK{}", rng.digits(14))),
                4 => ("NL", format!("ABNA{}", rng.digits(10))),
                _ => ("IT", format!("X{}", rng.digits(22))),
            };
            iban(rng, country, bban)
        }
        "order number" => match rng.below(4) {
            0 => format!("ORD-20{:02}-{}", rng.below(30), rng.digits(6)),
            1 => format!("#{}", 100_000_000 + rng.below(900_000_000)),
            2 => format!("SO-{}", rng.digits(8)),
            _ => format!("INV/20{:02}/{}", rng.below(30), rng.digits(5)),
        },
        "tracking number" => match rng.below(4) {
            0 => format!(
                "1Z{}{}",
                rng.pick(&["999AA1", "X5W2E0", "4E8F71"]),
                rng.digits(10)
            ),
            1 => format!("94{}", rng.digits(20)),
            2 => format!(
                "9400 {} {} {} {} {}",
                rng.digits(4),
                rng.digits(4),
                rng.digits(4),
                rng.digits(4),
                rng.digits(2)
            ),
            _ => format!("7{}", rng.digits(11)),
        },
        "amount" => match rng.below(4) {
            0 => format!("{}.{:02}", rng.below(100_000), rng.below(100)),
            1 => {
                let n = rng.below(10_000_000);
                format!("${},{:03}.{:02}", n / 1000, n % 1000, rng.below(100))
            }
            2 => format!(
                "€ {}.{:03},{:02}",
                rng.below(1000),
                rng.below(1000),
                rng.below(100)
            ),
            _ => format!("{}.{}", rng.below(1000), rng.digits(4)),
        },
        "ip address" => match rng.below(3) {
            0 => format!(
                "{}.{}.{}.{}",
                rng.below(256),
                rng.below(256),
                rng.below(256),
                rng.below(256)
            ),
            1 => format!(
                "{}.{}.{}.{}:{}",
                rng.below(256),
                rng.below(256),
                rng.below(256),
                rng.below(256),
                rng.below(65536)
            ),
            _ => format!(
                "2001:db8:{:x}:{:x}::{:x}:{:x}",
                rng.below(65536),
                rng.below(65536),
                rng.below(65536),
                rng.below(65536)
            ),
        },
        "float" => {
            let f =
                (rng.next() >> 11) as f64 / (1u64 << 53) as f64 * 10f64.powi(rng.below(6) as i32);
            format!("{f}")
        }
        "id" => match rng.below(3) {
            // Snowflake ids: milliseconds since 2010-11-04 (2016 to 2026) shifted left 22 bits.
            0 => (((170_000_000_000 + rng.below(330_000_000_000)) << 22) | rng.below(1 << 22))
                .to_string(),
            1 => rng.below(10_000_000).to_string(),
            _ => format!("cust_{}", rng.digits(10)),
        },
        _ => format!(
            "Order {} shipped on 20{:02}-{:02}-{:02} to {} {} St, {} items, total {}.{:02} EUR",
            rng.digits(7),
            rng.below(30),
            1 + rng.below(12),
            1 + rng.below(28),
            rng.below(9999),
            rng.pick(&["Main", "Oak", "Rue de la Paix", "High"]),
            rng.below(20),
            rng.below(5000),
            rng.below(100)
        ),
    };
    (kind, v)
}

/// `n` values of the corpus.
pub fn values(n: usize) -> Vec<(&'static str, String)> {
    let mut rng = Rng::new(17);
    (0..n).map(|i| value(&mut rng, i)).collect()
}
