//! The words the generator draws from: channels, carriers, countries, industries,
//! regions, names and titles, as CRM and shop feeds write them.

// As shops send them: free text, trimmed and lower-cased by order_created's transforms.
pub(super) const CHANNELS: [&str; 5] = [" Web", "web", "Mobile ", "store", "Marketplace"];
pub(super) const CARRIERS: [&str; 4] = ["DHL", "UPS", "FedEx", "La Poste"];
pub(super) const CANCEL_REASONS: [&str; 3] = ["customer request", "payment failed", "out of stock"];
pub(super) const COUNTRIES: [&str; 10] =
    ["US", "DE", "FR", "GB", "NL", "JP", "AU", "BR", "MX", "IN"];

// As CRMs send them (seed 000's example: "Healthcare", "US"): free text, not codes.
pub(super) const INDUSTRIES: [&str; 10] = [
    "Software",
    "Financial Services",
    "Healthcare",
    "Retail",
    "Manufacturing",
    "Education",
    "Energy",
    "Media",
    "Logistics",
    "Public Sector",
];
pub(super) const REGIONS: [(&str, &[&str], &str); 4] = [
    ("US", &["US"], "USD"),
    ("EMEA", &["DE", "FR", "GB", "NL", "ES", "SE"], "EUR"),
    ("APAC", &["JP", "AU", "SG", "IN"], "USD"),
    ("LATAM", &["BR", "MX", "AR", "CL"], "USD"),
];
pub(super) const NAME_PARTS: [&str; 16] = [
    "Blue", "North", "Acme", "Vertex", "Lumen", "Harbor", "Summit", "Quartz", "Nimbus", "Cedar",
    "Atlas", "Polar", "Orbit", "Granite", "Beacon", "Falcon",
];
pub(super) const NAME_SUFFIXES: [&str; 8] =
    ["Systems", "Labs", "Logistics", "Health", "Capital", "Foods", "Energy", "Media"];
pub(super) const FIRST_NAMES: [&str; 12] = [
    "Ana", "Ben", "Chloe", "David", "Elif", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kara",
    "Luca",
];
pub(super) const LAST_NAMES: [&str; 12] = [
    "Silva", "Meyer", "Dubois", "Khan", "Novak", "Rossi", "Tanaka", "Smith", "Garcia", "Larsen",
    "Okafor", "Ivanova",
];
pub(super) const TITLES: [&str; 6] =
    ["CTO", "Head of Data", "VP Sales", "Procurement Lead", "CFO", "Engineering Manager"];
pub(super) const STAGES: [&str; 4] = ["prospecting", "qualification", "proposal", "negotiation"];
