//! Conversions between `SystemTime` and Unix seconds.

use std::time::SystemTime;

/// Seconds since the Unix epoch, negative before it, saturating.
pub(crate) fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    #[test]
    fn unix_secs_handles_both_sides_of_the_epoch() {
        assert_eq!(
            unix_secs(SystemTime::UNIX_EPOCH + Duration::from_secs(7)),
            7
        );
        assert_eq!(
            unix_secs(SystemTime::UNIX_EPOCH - Duration::from_secs(7)),
            -7
        );
    }
}
