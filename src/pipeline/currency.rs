//! ISO 4217 currency codes (active codes as of 2025, plus the precious-metal and fund codes
//! payment systems still send).

const CODES: &str = "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL \
BSD BTN BWP BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN \
ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES \
KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN \
MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG \
SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI \
UYU UYW UZS VED VES VND VUV WST XAF XAG XAU XCD XCG XDR XOF XPD XPF XPT XSU XUA YER ZAR ZMW ZWG ZWL";

/// True for an upper-case ISO 4217 alphabetic code.
pub fn is_iso4217(code: &str) -> bool {
    code.len() == 3 && CODES.split_ascii_whitespace().any(|c| c == code)
}

#[cfg(test)]
mod tests {
    #[test]
    fn knows_the_usual_codes() {
        for code in ["EUR", "USD", "GBP", "JPY", "SEK"] {
            assert!(super::is_iso4217(code), "{code}");
        }
        for code in ["EURO", "eur", "XXX", "US", ""] {
            assert!(!super::is_iso4217(code), "{code}");
        }
    }
}
