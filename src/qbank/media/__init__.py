"""Images in requests: decoding under named limits, and the policy for fetching image URIs."""
