//! Forwards a plugin's `tracing` events into the host's log.
//!
//! A cdylib has its own copy of `tracing` and its statics, so events a plugin
//! emits never reach the host's subscriber on their own: this layer, set as
//! the plugin's global default, hands each one to [`HostServices::log`].

use std::fmt::Write as _;

use abi_stable::std_types::RStr;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

use crate::abi::{HostServicesBox, LogLevel};

struct ForwardLayer {
    host: HostServicesBox,
}

#[derive(Default)]
struct Message {
    text: String,
    fields: String,
}

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.text.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.text, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }
}

impl<S: Subscriber> Layer<S> for ForwardLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = match *event.metadata().level() {
            Level::ERROR => LogLevel::Error,
            Level::WARN => LogLevel::Warn,
            Level::INFO => LogLevel::Info,
            Level::DEBUG => LogLevel::Debug,
            Level::TRACE => LogLevel::Trace,
        };
        let mut message = Message::default();
        event.record(&mut message);
        message.text.push_str(&message.fields);
        self.host.log(level, RStr::from_str(event.metadata().target()), RStr::from_str(&message.text));
    }
}

/// Makes the host's log this plugin library's `tracing` destination.
/// Each loaded library is a private copy with its own statics, so this runs
/// once per library; a second call (a second instance) keeps the first.
pub(crate) fn forward_to_host(host: &HostServicesBox) {
    let subscriber = tracing_subscriber::registry()
        .with(ForwardLayer { host: host.clone() })
        .with(tracing_subscriber::filter::LevelFilter::DEBUG);
    let _ = tracing::subscriber::set_global_default(subscriber);
}
