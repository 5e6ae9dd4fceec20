//! The rules every field must satisfy. The `DATA_FILE` loader and batches of new interactions both check rows
//! here, so a row is judged the same way wherever it comes from.

/// What item and user ids must look like: the recommendation agent's user id pattern, so every id can appear in a
/// URL path or query unescaped.
pub const ID_PATTERN: &str = "^[A-Za-z0-9._-]{1,64}$";
/// Longest id, in bytes (ids are ASCII).
pub const MAX_ID_BYTES: usize = 64;
/// Longest item title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest category name, in characters: the bound the recommendation agent puts on preferred categories, so every
/// category can be named in a user's preferences.
pub const MAX_CATEGORY_CHARS: usize = 40;
/// Heaviest interaction. Weights say how strong a signal is (say 1 for a view, 5 for a purchase); the bound stops
/// one mistaken row (a price, a duration in milliseconds) from outweighing thousands of ordinary ones.
pub const MAX_WEIGHT: f64 = 1000.0;
/// Latest interaction time, in seconds since 1970: 9999-12-31T23:59:59Z. A larger value is almost always a time in
/// milliseconds.
pub const MAX_TIME: u64 = 253_402_300_799;

/// Why a field was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// An id outside [`ID_PATTERN`].
    #[error("must match {ID_PATTERN}")]
    Id,
    /// Empty or only white space.
    #[error("must not be empty")]
    Empty,
    /// Longer than allowed.
    #[error("must be at most {max} characters long")]
    TooLong {
        /// The bound, in characters.
        max: usize,
    },
    /// Leading or trailing white space, which would make two spellings of one name.
    #[error("must not start or end with white space")]
    Padded,
    /// A control character (a newline, a tab, NUL...).
    #[error("must not contain control characters")]
    Control,
    /// NaN or an infinity.
    #[error("must be a finite number")]
    NotFinite,
    /// Zero or negative: negative feedback is not modelled, and a zero weight would change nothing.
    #[error("must be greater than 0")]
    NotPositive,
    /// Above [`MAX_WEIGHT`].
    #[error("must be at most {MAX_WEIGHT}")]
    TooHeavy,
    /// Above [`MAX_TIME`].
    #[error("must be at most {MAX_TIME} (seconds since 1970; is it in milliseconds?)")]
    TooLate,
    /// An item id that the catalog does not have.
    #[error("is not an item of the catalog")]
    UnknownItem,
}

/// Checks an item or user id against [`ID_PATTERN`].
pub fn id(value: &str) -> Result<(), FieldError> {
    let valid = (1..=MAX_ID_BYTES).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid { Ok(()) } else { Err(FieldError::Id) }
}

/// Checks a human-readable name: not blank, at most `max` characters, no control characters, no padding.
fn text(value: &str, max: usize) -> Result<(), FieldError> {
    if value.trim().is_empty() {
        return Err(FieldError::Empty);
    }
    if value.chars().count() > max {
        return Err(FieldError::TooLong { max });
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::Control);
    }
    if value.trim() != value {
        return Err(FieldError::Padded);
    }
    Ok(())
}

/// Checks an item title.
pub fn title(value: &str) -> Result<(), FieldError> {
    text(value, MAX_TITLE_CHARS)
}

/// Checks a category name (categories are compared exactly, case included).
pub fn category(value: &str) -> Result<(), FieldError> {
    text(value, MAX_CATEGORY_CHARS)
}

/// Checks a category a query asks for: 1 to [`MAX_CATEGORY_CHARS`] characters, the bound of a preferred category
/// and nothing more. A name that breaks the catalog's other rules (padding, control characters) cannot be a
/// category of the catalog, so it is answered with no items rather than refused: a preference stored under the
/// looser rule must never make a user's recommendations fail.
pub fn asked_category(value: &str) -> Result<(), FieldError> {
    if value.is_empty() {
        Err(FieldError::Empty)
    } else if value.chars().count() > MAX_CATEGORY_CHARS {
        Err(FieldError::TooLong { max: MAX_CATEGORY_CHARS })
    } else {
        Ok(())
    }
}

/// Checks an interaction weight: finite, above 0, at most [`MAX_WEIGHT`].
pub fn weight(value: f64) -> Result<(), FieldError> {
    if !value.is_finite() {
        Err(FieldError::NotFinite)
    } else if value <= 0.0 {
        Err(FieldError::NotPositive)
    } else if value > MAX_WEIGHT {
        Err(FieldError::TooHeavy)
    } else {
        Ok(())
    }
}

/// Checks an interaction time (seconds since 1970).
pub fn time(value: u64) -> Result<(), FieldError> {
    if value > MAX_TIME { Err(FieldError::TooLate) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_pattern() {
        for good in ["u1", "books-001", "A.b_c-9", &"x".repeat(64)] {
            assert_eq!(id(good), Ok(()), "{good}");
        }
        for bad in ["", "a b", "é", "a/b", &"x".repeat(65)] {
            assert_eq!(id(bad), Err(FieldError::Id), "{bad:?}");
        }
    }

    #[test]
    fn names_are_trimmed_short_and_printable() {
        assert_eq!(title("Quiet Harbor Cookbook"), Ok(()));
        assert_eq!(category("Home & Kitchen"), Ok(()));
        assert_eq!(title("   "), Err(FieldError::Empty));
        assert_eq!(title(""), Err(FieldError::Empty));
        assert_eq!(title(" padded"), Err(FieldError::Padded));
        assert_eq!(title("two\nlines"), Err(FieldError::Control));
        assert_eq!(category(&"é".repeat(40)), Ok(()), "characters are counted, not bytes");
        assert_eq!(category(&"é".repeat(41)), Err(FieldError::TooLong { max: 40 }));
        assert_eq!(asked_category(" padded\t"), Ok(()), "asking is checked only for length");
        assert_eq!(asked_category(""), Err(FieldError::Empty));
        assert_eq!(asked_category(&"é".repeat(41)), Err(FieldError::TooLong { max: 40 }));
    }

    #[test]
    fn weights_are_finite_positive_and_bounded() {
        assert_eq!(weight(0.5), Ok(()));
        assert_eq!(weight(MAX_WEIGHT), Ok(()));
        assert_eq!(weight(f64::NAN), Err(FieldError::NotFinite));
        assert_eq!(weight(f64::INFINITY), Err(FieldError::NotFinite));
        assert_eq!(weight(0.0), Err(FieldError::NotPositive));
        assert_eq!(weight(-1.0), Err(FieldError::NotPositive));
        assert_eq!(weight(1000.5), Err(FieldError::TooHeavy));
    }

    #[test]
    fn times_in_milliseconds_are_refused() {
        assert_eq!(time(1_700_000_000), Ok(()));
        assert_eq!(time(1_700_000_000_000), Err(FieldError::TooLate));
    }
}
