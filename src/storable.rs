//! The one boundary every text from input crosses on its way out of eventline: to a
//! Postgres column, a lake column, a DLQ header or a log line. Input can hold anything
//! (a NUL character in a JSON key, bytes that are not UTF-8 in a Kafka key or header, a
//! reason that lists 60,000 unknown properties); what leaves must be storable.
//!
//! The rules, in one place so every path applies the same ones:
//! - NUL (U+0000), which Postgres's `text` and `jsonb` refuse, becomes the six
//!   characters `\u0000`, as JSON writes it: visible, and it cannot be mistaken for
//!   the end of the text by a C reader.
//! - Bytes that are not UTF-8 become U+FFFD (the replacement character).
//! - Where a column needs a bound (an index, a reason), the text is cut at a character
//!   boundary and ends with ` [... N bytes cut]`, so a reader knows it was cut.
//!
//! The original bytes are never lost: a dead letter keeps them untouched in
//! `dead_letters.record_key` / `record_value` (bytea) and as the DLQ record's value.
//!
//! Postgres rows take their input text as [`StorableText`], which can only be built
//! through these rules, so a new column fed from input cannot bypass them.
//!
//! Pure: imports nothing of the crate.

use std::borrow::Cow;

/// The longest reason stored or sent (a dead letter's, a refusal's), in bytes.
pub const MAX_REASON_BYTES: usize = 4096;

/// The longest key eventline indexes (an entity key, a tombstone's key), in bytes: a
/// B-tree index row holds at most 2,704 bytes, and an index may pair the key with
/// other columns.
pub const MAX_KEY_BYTES: usize = 1024;

/// `text` with every NUL written as `\u0000`.
pub fn text(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\\u0000"))
    } else {
        Cow::Borrowed(text)
    }
}

/// Bytes as storable text: U+FFFD for what is not UTF-8, then [`text`].
pub fn from_bytes(bytes: &[u8]) -> Cow<'_, str> {
    match String::from_utf8_lossy(bytes) {
        Cow::Borrowed(s) => text(s),
        Cow::Owned(s) => Cow::Owned(text(&s).into_owned()),
    }
}

/// [`text`], cut to at most `max` bytes at a character boundary, ending with a note of
/// how many bytes were cut.
pub fn bounded(raw: &str, max: usize) -> Cow<'_, str> {
    let storable = text(raw);
    if storable.len() <= max {
        return storable;
    }
    let cut_note = |n: usize| format!(" [... {n} bytes cut]");
    // The note's own length depends on the count; the longest count is the whole text.
    let room = max.saturating_sub(cut_note(storable.len()).len());
    let mut end = room.min(storable.len());
    while !storable.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(max);
    out.push_str(&storable[..end]);
    out.push_str(&cut_note(storable.len() - end));
    Cow::Owned(out)
}

/// A reason as stored and sent: [`bounded`] by [`MAX_REASON_BYTES`].
pub fn reason(raw: &str) -> Cow<'_, str> {
    bounded(raw, MAX_REASON_BYTES)
}

/// Why a key cannot be indexed as it is, or `None` when it can.
pub fn key_problem(key: &[u8]) -> Option<String> {
    if key.len() > MAX_KEY_BYTES {
        return Some(format!(
            "is {} bytes, longer than the {MAX_KEY_BYTES} bytes eventline indexes",
            key.len()
        ));
    }
    match std::str::from_utf8(key) {
        Err(e) => Some(format!("is not UTF-8 (at byte {})", e.valid_up_to())),
        Ok(k) if k.contains('\0') => Some("contains a NUL character (U+0000)".to_string()),
        Ok(_) => None,
    }
}

/// Text bound for a Postgres `text` column, made storable by the rules of this module.
/// Its only constructors apply them, so a row that takes a `StorableText` cannot carry a
/// NUL into Postgres.
#[derive(Debug, Clone, PartialEq, Eq, diesel::expression::AsExpression)]
#[diesel(sql_type = diesel::sql_types::Text)]
pub struct StorableText<'a>(Cow<'a, str>);

impl<'a> StorableText<'a> {
    /// [`text`].
    pub fn new(raw: &'a str) -> Self {
        StorableText(text(raw))
    }

    /// [`bounded`].
    pub fn bounded(raw: &'a str, max: usize) -> Self {
        StorableText(bounded(raw, max))
    }

    /// [`reason`].
    pub fn reason(raw: &'a str) -> Self {
        StorableText(reason(raw))
    }

    /// The text as it will be stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl diesel::serialize::ToSql<diesel::sql_types::Text, diesel::pg::Pg> for StorableText<'_> {
    fn to_sql<'b>(
        &'b self,
        out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>,
    ) -> diesel::serialize::Result {
        use std::io::Write;
        out.write_all(self.0.as_bytes())?;
        Ok(diesel::serialize::IsNull::No)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_is_written_as_its_json_escape_and_bad_bytes_as_the_replacement_character() {
        assert_eq!(text("a\0b"), "a\\u0000b");
        assert!(matches!(text("plain"), Cow::Borrowed("plain")));
        assert_eq!(from_bytes(b"k\xff\x00"), "k\u{FFFD}\\u0000");
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary_and_says_how_much() {
        let long = "é".repeat(3000); // 6,000 bytes
        let cut = bounded(&long, 100);
        assert!(cut.len() <= 100, "{}", cut.len());
        assert!(cut.ends_with(" bytes cut]"), "{cut}");
        let kept = cut.split(" [...").next().unwrap();
        assert!(kept.chars().all(|c| c == 'é'));
        let n: usize =
            cut.rsplit("[... ").next().unwrap().split(' ').next().unwrap().parse().unwrap();
        assert_eq!(kept.len() + n, 6000);
        assert_eq!(bounded("short", 100), "short");
        assert!(reason(&"x".repeat(100_000)).len() <= MAX_REASON_BYTES);
    }

    #[test]
    fn keys_that_an_index_cannot_hold_are_named() {
        assert_eq!(key_problem(b"acc_1"), None);
        assert!(key_problem(&vec![b'k'; 3000]).unwrap().contains("3000 bytes"));
        assert!(key_problem(b"\xff\xfe").unwrap().contains("not UTF-8"));
        assert!(key_problem(b"a\0").unwrap().contains("NUL"));
    }
}
