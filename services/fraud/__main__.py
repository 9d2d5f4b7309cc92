from services.fraud.main import main

main()
