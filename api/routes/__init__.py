"""One router per resource; handlers stay thin and call the service functions."""
