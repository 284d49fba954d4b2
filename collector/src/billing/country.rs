//! ITU-T E.164 country codes: which leading 1, 2 or 3 digits of an international number are
//! its country code.
//!
//! Source: ITU-T, "List of ITU-T Recommendation E.164 assigned country codes" (Complement to
//! Recommendation E.164, annex to the ITU Operational Bulletin; position of 15.XII.2016), with
//! the later assignment of 997 to Kazakhstan (2023). Only assigned codes are listed: geographic
//! areas, shared codes for groups of countries (388), global services (800, 808, 878, 979, 991)
//! and networks (870, 881, 882, 883, 888). Spare and reserved codes (e.g. 28x, 384, 999) are
//! left out, so a number under them has no country code here.
//!
//! Country codes form a prefix code (no code is the start of another), so at most one of the
//! number's first 1, 2 or 3 digits is listed; a test checks that the lists keep this property.
#![deny(clippy::indexing_slicing, clippy::panic)]

/// One-digit codes: North American Numbering Plan, Russia and Kazakhstan.
const CC1: &[u16] = &[1, 7];

/// Two-digit codes, ascending.
const CC2: &[u16] = &[
    20, 27, 30, 31, 32, 33, 34, 36, 39, 40, 41, 43, 44, 45, 46, 47, 48, 49, 51, 52, 53, 54, 55, 56,
    57, 58, 60, 61, 62, 63, 64, 65, 66, 81, 82, 84, 86, 90, 91, 92, 93, 94, 95, 98,
];

/// Three-digit codes, ascending.
const CC3: &[u16] = &[
    211, 212, 213, 216, 218, // North Africa, South Sudan
    220, 221, 222, 223, 224, 225, 226, 227, 228, 229, // West Africa
    230, 231, 232, 233, 234, 235, 236, 237, 238, 239, //
    240, 241, 242, 243, 244, 245, 246, 247, 248, 249, //
    250, 251, 252, 253, 254, 255, 256, 257, 258, // East Africa (259 spare)
    260, 261, 262, 263, 264, 265, 266, 267, 268, 269, //
    290, 291, 297, 298, 299, // Saint Helena, Eritrea, Aruba, Faroe, Greenland
    350, 351, 352, 353, 354, 355, 356, 357, 358, 359, //
    370, 371, 372, 373, 374, 375, 376, 377, 378, 379, //
    380, 381, 382, 383, 385, 386, 387, 388, 389, // (384 spare)
    420, 421, 423, // Czechia, Slovakia, Liechtenstein
    500, 501, 502, 503, 504, 505, 506, 507, 508, 509, //
    590, 591, 592, 593, 594, 595, 596, 597, 598, 599, //
    670, 672, 673, 674, 675, 676, 677, 678, 679, // (671 spare)
    680, 681, 682, 683, 685, 686, 687, 688, 689, // (684 spare)
    690, 691, 692, //
    800, 808, // International Freephone, International Shared Cost
    850, 852, 853, 855, 856, //
    870, 878, // Inmarsat SNAC, Universal Personal Telecommunication
    880, 881, 882, 883, 886, 888, // Bangladesh, networks, Taiwan, OCHA
    960, 961, 962, 963, 964, 965, 966, 967, 968, //
    970, 971, 972, 973, 974, 975, 976, 977, 979, // (978 spare; 979 premium rate)
    991, 992, 993, 994, 995, 996, 997, 998, // (990, 999 not assigned)
];

/// The country code at the start of `digits` (an E.164 number without `+`), as a slice of it,
/// or `None` if its first digits are no assigned code.
pub fn country_code(digits: &str) -> Option<&str> {
    (1..=3).find_map(|len| {
        let head = digits.get(..len)?;
        if !head.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let code: u16 = head.parse().ok()?;
        let list: &[u16] = match len {
            1 => CC1,
            2 => CC2,
            _ => CC3,
        };
        list.binary_search(&code).is_ok().then_some(head)
    })
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn lists_are_sorted_and_prefix_free() {
        for list in [CC1, CC2, CC3] {
            assert!(
                list.windows(2).all(|w| w[0] < w[1]),
                "{list:?} not ascending"
            );
        }
        assert!(CC1.iter().all(|c| (1..=9).contains(c)));
        assert!(CC2.iter().all(|c| (10..=99).contains(c)));
        assert!(CC3.iter().all(|c| (100..=999).contains(c)));
        // No code may start another, or a number would have two country codes.
        for &c in CC2 {
            assert!(!CC1.contains(&(c / 10)), "{c} starts with a 1-digit code");
        }
        for &c in CC3 {
            assert!(!CC1.contains(&(c / 100)), "{c} starts with a 1-digit code");
            assert!(!CC2.contains(&(c / 10)), "{c} starts with a 2-digit code");
        }
    }

    #[test]
    fn known_codes() {
        // One, two and three digits; the rest of the number is ignored.
        assert_eq!(country_code("12125550100"), Some("1"));
        assert_eq!(country_code("74951234567"), Some("7"));
        assert_eq!(country_code("4930123"), Some("49"));
        assert_eq!(country_code("442079460000"), Some("44"));
        assert_eq!(country_code("35312345678"), Some("353"));
        assert_eq!(country_code("8816"), Some("881"));
        // The number may be the code alone.
        assert_eq!(country_code("353"), Some("353"));
        assert_eq!(country_code("35"), None);
        // Spare and reserved codes, and the 0 no code starts with.
        assert_eq!(country_code("2801234"), None);
        assert_eq!(country_code("3841234"), None);
        assert_eq!(country_code("9991234"), None);
        assert_eq!(country_code("0441234"), None);
        assert_eq!(country_code(""), None);
        assert_eq!(country_code("4x"), None);
    }
}
