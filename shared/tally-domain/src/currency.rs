//! ISO 4217 alphabetic codes and their minor-unit exponents.
//!
//! Only codes with a defined minor unit are listed: the precious metals and
//! fund codes marked "N.A." in ISO 4217 (XAU, XDR, …) cannot carry a posting.

use std::fmt;
use std::str::FromStr;

/// A currency from ISO 4217 with its minor-unit exponent (USD 2, JPY 0, BHD 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: [u8; 3],
    exponent: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an ISO 4217 currency code with a minor unit")]
pub struct UnknownCurrency(pub String);

const EXPONENT_0: &[&str] = &[
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
    "VUV", "XAF", "XOF", "XPF",
];
const EXPONENT_3: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];
const EXPONENT_4: &[&str] = &["CLF", "UYW"];
const EXPONENT_2: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF",
    "CHE", "CHF", "CHW", "CNY", "COP", "COU", "CRC", "CUC", "CUP", "CVE", "CZK", "DKK", "DOP",
    "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GTQ",
    "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IRR", "JMD", "KES", "KGS", "KHR",
    "KPW", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "MAD", "MDL", "MGA", "MKD", "MMK",
    "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MXV", "MYR", "MZN", "NAD", "NGN", "NIO",
    "NOK", "NPR", "NZD", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "QAR", "RON", "RSD", "RUB",
    "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC",
    "SYP", "SZL", "THB", "TJS", "TMT", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "USD", "USN",
    "UYU", "UZS", "VED", "VES", "WST", "XCD", "XCG", "YER", "ZAR", "ZMW", "ZWG",
];

impl Currency {
    /// Looks a code up in the ISO 4217 table; the code must be exactly three
    /// upper-case letters.
    pub fn parse(code: &str) -> Result<Self, UnknownCurrency> {
        let unknown = || UnknownCurrency(code.to_owned());
        let bytes: [u8; 3] = code.as_bytes().try_into().map_err(|_| unknown())?;
        let exponent = [
            (EXPONENT_0, 0),
            (EXPONENT_2, 2),
            (EXPONENT_3, 3),
            (EXPONENT_4, 4),
        ]
        .iter()
        .find(|(codes, _)| codes.contains(&code))
        .map(|(_, e)| *e)
        .ok_or_else(unknown)?;
        Ok(Currency {
            code: bytes,
            exponent,
        })
    }

    pub fn code(&self) -> &str {
        // Constructed only from the ASCII table above.
        std::str::from_utf8(&self.code).expect("currency codes are ASCII")
    }

    /// Digits after the decimal point of the minor unit.
    pub fn exponent(&self) -> u32 {
        self.exponent
    }
}

impl FromStr for Currency {
    type Err = UnknownCurrency;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::parse(s)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl serde::Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> serde::Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Currency::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponents_follow_iso_4217() {
        assert_eq!(Currency::parse("USD").unwrap().exponent(), 2);
        assert_eq!(Currency::parse("JPY").unwrap().exponent(), 0);
        assert_eq!(Currency::parse("BHD").unwrap().exponent(), 3);
        assert_eq!(Currency::parse("CLF").unwrap().exponent(), 4);
    }

    #[test]
    fn codes_without_a_minor_unit_or_in_lower_case_are_unknown() {
        for bad in ["XAU", "XDR", "usd", "US", "USDX", "", "ZZZ"] {
            assert!(Currency::parse(bad).is_err(), "{bad} should be unknown");
        }
    }

    #[test]
    fn no_code_is_listed_twice() {
        let mut all: Vec<&str> = [EXPONENT_0, EXPONENT_2, EXPONENT_3, EXPONENT_4].concat();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}
