from services.payment.main import main
from shared.runtime import run

run(main)
