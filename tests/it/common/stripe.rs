//! Stripe-side set-up the tests do behind readerd's back, through the real client against
//! the emulator: a location, a reader, another integration's payment left on a reader.

use readerd::stripe::params::{
    CreateLocation, CreatePaymentIntent, ProcessPaymentIntent, RegisterReader,
};
use readerd::stripe::wire::{Address, CaptureMethod, Location, PaymentIntent, Reader};
use readerd::stripe::{RequestOptions, StripeClient};

/// A location on the platform at `line1, postal_code city, country`, created with the
/// idempotency key `key`.
pub async fn create_location(
    stripe: &StripeClient,
    display_name: &str,
    [line1, postal_code, city, country]: [&str; 4],
    key: &str,
) -> Location {
    stripe
        .create_location(
            &CreateLocation {
                display_name: display_name.into(),
                address: Address {
                    line1: Some(line1.into()),
                    city: Some(city.into()),
                    postal_code: Some(postal_code.into()),
                    country: Some(country.into()),
                    ..Default::default()
                },
                metadata: Default::default(),
            },
            &RequestOptions::platform().key(key),
        )
        .await
        .unwrap()
}

/// A simulated WisePOS E labelled `label` at `location`, registered with the key `key`.
pub async fn register_reader(
    stripe: &StripeClient,
    label: &str,
    location: &str,
    key: &str,
) -> Reader {
    stripe
        .register_reader(
            &RegisterReader {
                registration_code: "simulated-wpe".into(),
                label: Some(label.into()),
                location: Some(location.into()),
                metadata: Default::default(),
            },
            &RequestOptions::platform().key(key),
        )
        .await
        .unwrap()
}

/// Another integration's payment (7.00 EUR on `account`) handed to `reader`, as a foreign
/// action readerd must wait for and never cancel. Keys: `{key}-pi` and `{key}-ppi`.
pub async fn start_foreign_payment(
    stripe: &StripeClient,
    account: &str,
    reader: &str,
    key: &str,
) -> PaymentIntent {
    let foreign = stripe
        .create_payment_intent(
            &CreatePaymentIntent {
                amount: 700,
                currency: "eur".into(),
                payment_method_types: vec!["card_present".into()],
                capture_method: CaptureMethod::Automatic,
                application_fee_amount: None,
                description: None,
                metadata: Default::default(),
                transfer_destination: None,
                on_behalf_of: None,
                transfer_group: None,
            },
            &RequestOptions::account(account).key(format!("{key}-pi")),
        )
        .await
        .unwrap();
    stripe
        .process_payment_intent(
            reader,
            &ProcessPaymentIntent {
                payment_intent: foreign.id.clone(),
                process_config: None,
            },
            &RequestOptions::platform().key(format!("{key}-ppi")),
        )
        .await
        .unwrap();
    foreign
}
