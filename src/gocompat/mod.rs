//! Go behaviours regsync users see and that we reproduce exactly: `time.Duration` text
//! ([`duration`]), `time` layouts ([`gotime`]), `fmt` and `encoding/json` text of template
//! values ([`gofmt`]), and Go's error and quoting texts ([`gotext`]).

pub mod duration;
pub mod gofmt;
pub mod gotext;
pub mod gotime;
