"""The engine: criteria, physical removal, repairs, the head, the session's record, the config and
the methods (PX, DPX, SD-DPX, progressive retraining). Stands on lrp/ and models/, never on data/ or run/."""
