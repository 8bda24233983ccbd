//! IPv4 CIDR blocks: parsing, containment and overlap. Small enough that a crate is not worth it.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cidr {
    pub base: u32,
    pub prefix: u8,
}

impl Cidr {
    pub fn new(base: u32, prefix: u8) -> Self {
        Cidr { base, prefix }
    }
    fn mask(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        }
    }
    pub fn size(&self) -> u64 {
        1u64 << (32 - self.prefix)
    }
    pub fn last(&self) -> u32 {
        self.base | !Self::mask(self.prefix)
    }
    /// True when every address of `other` lies inside `self`.
    pub fn contains(&self, other: &Cidr) -> bool {
        other.prefix >= self.prefix && (other.base & Self::mask(self.prefix)) == self.base
    }
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other) || other.contains(self)
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) =
            s.split_once('/').ok_or_else(|| format!("`{s}` is not a CIDR block: expected ADDRESS/PREFIX, e.g. 10.0.0.0/16"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| format!("`{s}`: `{addr}` is not an IPv4 address"))?;
        let prefix: u8 =
            prefix.parse().ok().filter(|p| *p <= 32).ok_or_else(|| format!("`{s}`: prefix length must be a number from 0 to 32"))?;
        let base = u32::from(addr);
        if base & !Cidr::mask(prefix) != 0 {
            let net = Ipv4Addr::from(base & Cidr::mask(prefix));
            return Err(format!("`{s}` has host bits set: did you mean {net}/{prefix}?"));
        }
        Ok(Cidr { base, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_prints() {
        assert_eq!(c("10.0.0.0/16").to_string(), "10.0.0.0/16");
        assert_eq!(c("0.0.0.0/0").size(), 1 << 32);
        assert_eq!(Ipv4Addr::from(c("10.0.128.0/24").last()).to_string(), "10.0.128.255");
    }

    #[test]
    fn rejects_bad_input() {
        assert!("10.0.0.0".parse::<Cidr>().unwrap_err().contains("ADDRESS/PREFIX"));
        assert!("10.0.0.300/16".parse::<Cidr>().is_err());
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.1.0/16".parse::<Cidr>().unwrap_err().contains("did you mean 10.0.0.0/16"));
    }

    #[test]
    fn containment_and_overlap() {
        assert!(c("10.0.0.0/16").contains(&c("10.0.128.0/24")));
        assert!(!c("10.0.0.0/16").contains(&c("10.1.0.0/24")));
        assert!(!c("10.0.0.0/24").contains(&c("10.0.0.0/16")));
        assert!(c("10.0.0.0/24").overlaps(&c("10.0.0.0/16")));
        assert!(!c("10.0.0.0/24").overlaps(&c("10.0.1.0/24")));
    }
}
