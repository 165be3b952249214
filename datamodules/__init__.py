"""Lightning DataModules for event-camera datasets (Tonic) and the embedded offline N-Digits set."""
