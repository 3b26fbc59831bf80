//! Exact decimal amounts: parsing at a currency's precision, half-even
//! rounding to the minor unit, and formatting at the exponent.

use crate::currency::Currency;
use rust_decimal::{Decimal, RoundingStrategy};
use std::str::FromStr;

/// Largest magnitude, in major units, that an amount or balance may hold.
/// Keeps `balance × rate × days` far inside `Decimal`'s 96-bit range.
pub const AMOUNT_ABS_MAX: Decimal = Decimal::from_parts(0xA764_0000, 0x0DE0_B6B3, 0, false, 0); // 10^18

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("`{0}` is not a decimal number (expected digits with an optional sign and one `.`)")]
    Malformed(String),
    #[error("`{value}` has {scale} decimal places; {currency} allows at most {exponent}")]
    ScaleTooLarge {
        value: String,
        scale: u32,
        currency: String,
        exponent: u32,
    },
    #[error("`{0}` is out of range (magnitude must be below 10^18)")]
    OutOfRange(String),
}

/// Parses a strict decimal string: `-?[0-9]+(\.[0-9]+)?`. No exponent
/// notation, no `+`, no surrounding spaces, no leading `.`.
pub fn parse_decimal(s: &str) -> Result<Decimal, AmountError> {
    let malformed = || AmountError::Malformed(s.to_owned());
    let body = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || frac.is_some_and(|f| !digits(f)) {
        return Err(malformed());
    }
    if int.len() + frac.map_or(0, str::len) > 28 {
        return Err(AmountError::OutOfRange(s.to_owned()));
    }
    let d = Decimal::from_str(s).map_err(|_| malformed())?;
    if d.abs() >= AMOUNT_ABS_MAX {
        return Err(AmountError::OutOfRange(s.to_owned()));
    }
    Ok(d)
}

/// Parses an amount in major units whose scale must not exceed the currency's
/// exponent (`12.345` is refused for USD, `1234.5` for JPY).
pub fn parse_amount(s: &str, currency: Currency) -> Result<Decimal, AmountError> {
    let d = parse_decimal(s)?;
    let scale = s.split_once('.').map_or(0, |(_, f)| f.len() as u32);
    if scale > currency.exponent() {
        return Err(AmountError::ScaleTooLarge {
            value: s.to_owned(),
            scale,
            currency: currency.code().to_owned(),
            exponent: currency.exponent(),
        });
    }
    Ok(d)
}

/// Rounds to `exponent` decimal places, ties to even (banker's rounding).
pub fn round_half_even(d: Decimal, exponent: u32) -> Decimal {
    d.round_dp_with_strategy(exponent, RoundingStrategy::MidpointNearestEven)
}

/// Formats an amount with exactly the currency's number of decimals
/// (`1` USD → `"1.00"`, `5` JPY → `"5"`). The amount must already be at or
/// below that scale.
pub fn format_amount(d: Decimal, currency: Currency) -> String {
    let mut d = d;
    d.rescale(currency.exponent());
    if d.is_zero() {
        d.set_sign_positive(true);
    }
    d.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::dec;

    fn usd() -> Currency {
        Currency::parse("USD").unwrap()
    }

    #[test]
    fn the_max_constant_is_ten_to_the_eighteenth() {
        assert_eq!(AMOUNT_ABS_MAX, dec("1000000000000000000"));
    }

    #[test]
    fn ties_round_to_even() {
        assert_eq!(round_half_even(dec("0.125"), 2), dec("0.12"));
        assert_eq!(round_half_even(dec("0.135"), 2), dec("0.14"));
        assert_eq!(round_half_even(dec("2.5"), 0), dec("2"));
        assert_eq!(round_half_even(dec("3.5"), 0), dec("4"));
        assert_eq!(round_half_even(dec("-0.125"), 2), dec("-0.12"));
        assert_eq!(round_half_even(dec("0.12500001"), 2), dec("0.13"));
    }

    #[test]
    fn amounts_refuse_more_decimals_than_the_currency_has() {
        assert_eq!(parse_amount("12.34", usd()).unwrap(), dec("12.34"));
        assert!(matches!(
            parse_amount("12.345", usd()),
            Err(AmountError::ScaleTooLarge { scale: 3, .. })
        ));
        let jpy = Currency::parse("JPY").unwrap();
        assert_eq!(parse_amount("1234", jpy).unwrap(), dec("1234"));
        assert!(parse_amount("1234.0", jpy).is_err());
    }

    #[test]
    fn malformed_decimals_are_refused() {
        for bad in [
            "", "-", "1.", ".5", "+1", "1e3", " 1", "1,00", "0x10", "1.2.3", "--1", "NaN",
        ] {
            assert!(
                matches!(parse_decimal(bad), Err(AmountError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_decimal("1000000000000000000"),
            Err(AmountError::OutOfRange(_))
        ));
    }

    #[test]
    fn formatting_pads_to_the_exponent() {
        assert_eq!(format_amount(dec("1"), usd()), "1.00");
        assert_eq!(format_amount(dec("0.5"), usd()), "0.50");
        assert_eq!(format_amount(dec("-0.00"), usd()), "0.00");
        assert_eq!(
            format_amount(dec("7"), Currency::parse("JPY").unwrap()),
            "7"
        );
        assert_eq!(
            format_amount(dec("0.1"), Currency::parse("BHD").unwrap()),
            "0.100"
        );
    }
}
