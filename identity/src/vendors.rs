//! The vendor ids Sluice captures: one table, read by [`capture`](crate::capture). Adding a
//! vendor is a row here, not code.

/// What a consent tool must grant before an id is stored or attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// Click ids and advertising cookies.
    Advertising,
    /// Analytics cookies and campaign (UTM) tags.
    Analytics,
}

/// Where an id is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A URL query parameter of the page (`context.page.url` or `context.page.search`).
    Param(&'static str),
    /// A first-party cookie, by exact name.
    Cookie(&'static str),
    /// First-party cookies whose name starts with this (`_ga_<measurement id>`); the rest of
    /// the name, lowercased, is appended to the id's name.
    CookiePrefix(&'static str),
}

/// How the value read becomes the value stored: the vendor's own formation rule, where it
/// has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Kept as it is.
    AsIs,
    /// Meta's click id: `fbc` = `fb.1.<ms of the click>.<fbclid>`.
    MetaClick,
    /// Google Analytics' `_ga` (`GA1.1.<random>.<seconds>`): the client id is the last two
    /// parts.
    GaClientId,
    /// Google's `_gcl_aw` (`GCL.<seconds>.<gclid>`): the gclid is the last part.
    GclAw,
}

/// One row: the name the id has in `context.ids`, where it comes from, its category and rule.
#[derive(Debug, Clone, Copy)]
pub struct VendorId {
    pub name: &'static str,
    pub origin: Origin,
    pub category: Category,
    pub rule: Rule,
}

const fn row(name: &'static str, origin: Origin, category: Category, rule: Rule) -> VendorId {
    VendorId {
        name,
        origin,
        category,
        rule,
    }
}

use Category::{Advertising, Analytics};
use Origin::{Cookie, CookiePrefix, Param};
use Rule::{AsIs, GaClientId, GclAw, MetaClick};

/// Every id captured. A URL parameter is read before a cookie of the same name (a new click
/// beats an old cookie).
pub const VENDOR_IDS: &[VendorId] = &[
    // Google Ads: click ids, and the cookies its tags keep them in.
    row("gclid", Param("gclid"), Advertising, AsIs),
    row("gbraid", Param("gbraid"), Advertising, AsIs),
    row("wbraid", Param("wbraid"), Advertising, AsIs),
    row("dclid", Param("dclid"), Advertising, AsIs),
    row("gclid", Cookie("_gcl_aw"), Advertising, GclAw),
    row("gcl_au", Cookie("_gcl_au"), Advertising, AsIs),
    // Meta: the click id formed as Meta forms it, and the browser id.
    row("fbc", Param("fbclid"), Advertising, MetaClick),
    row("fbc", Cookie("_fbc"), Advertising, AsIs),
    row("fbp", Cookie("_fbp"), Advertising, AsIs),
    // TikTok, Microsoft, LinkedIn, Snap, Pinterest, Reddit, X.
    row("ttclid", Param("ttclid"), Advertising, AsIs),
    row("ttp", Cookie("_ttp"), Advertising, AsIs),
    row("msclkid", Param("msclkid"), Advertising, AsIs),
    row("uetvid", Cookie("_uetvid"), Advertising, AsIs),
    row("li_fat_id", Param("li_fat_id"), Advertising, AsIs),
    row("sccid", Param("ScCid"), Advertising, AsIs),
    row("scid", Cookie("_scid"), Advertising, AsIs),
    row("epik", Param("epik"), Advertising, AsIs),
    row("pin_unauth", Cookie("_pin_unauth"), Advertising, AsIs),
    row("rdt_cid", Param("rdt_cid"), Advertising, AsIs),
    row("twclid", Param("twclid"), Advertising, AsIs),
    // Google Analytics: the client id, and a session cookie per measurement id.
    row("ga_client_id", Cookie("_ga"), Analytics, GaClientId),
    row("ga_session_", CookiePrefix("_ga_"), Analytics, AsIs),
    // Campaign tags: where the visit came from.
    row("utm_source", Param("utm_source"), Analytics, AsIs),
    row("utm_medium", Param("utm_medium"), Analytics, AsIs),
    row("utm_campaign", Param("utm_campaign"), Analytics, AsIs),
    row("utm_term", Param("utm_term"), Analytics, AsIs),
    row("utm_content", Param("utm_content"), Analytics, AsIs),
];

/// The category of an id by its name in `context.ids`, if it is one of the table's.
pub fn category(name: &str) -> Option<Category> {
    VENDOR_IDS
        .iter()
        .find(|v| match v.origin {
            CookiePrefix(_) => name.starts_with(v.name),
            _ => v.name == name,
        })
        .map(|v| v.category)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_named_in_context_ids_has_a_category() {
        for v in VENDOR_IDS {
            assert_eq!(category(v.name), Some(v.category), "{}", v.name);
        }
        assert_eq!(category("ga_session_abc123"), Some(Analytics));
        assert_eq!(category("user_id"), None);
    }

    #[test]
    fn the_table_covers_what_the_vendors_use() {
        let params: Vec<&str> = VENDOR_IDS
            .iter()
            .filter_map(|v| match v.origin {
                Param(p) => Some(p),
                _ => None,
            })
            .collect();
        for p in [
            "gclid",
            "gbraid",
            "wbraid",
            "fbclid",
            "ttclid",
            "msclkid",
            "li_fat_id",
            "ScCid",
            "epik",
            "rdt_cid",
            "twclid",
            "dclid",
            "utm_source",
        ] {
            assert!(params.contains(&p), "{p}");
        }
    }
}
